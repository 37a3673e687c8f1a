package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/migrate"
)

func newMigrateCmd() *cobra.Command {
	var envFiles []string
	var ecosystem, out string
	cmd := &cobra.Command{
		Use:   "migrate (--from-env FILE… | --from-ecosystem FILE) [--out FILE]",
		Short: "Print the configuration of this machine equivalent to an old emp machine's, and what changes",
		Long: `migrate reads an old emp machine's configuration: its .env files (--from-env, repeatable:
.env, then .env.secret, then what the deployment added), or the /workspace/pm2-ecosystem.config.cjs
its generator wrote (--from-ecosystem). It prints the equivalent configuration of this machine as
an env file, then, as comments, the old variables it renamed, ignored or cannot honour, how the PM2
apps map to slots and services, and what changes in behaviour. Secrets are not printed; --out FILE
writes the whole configuration, secrets included, to FILE (mode 0600). It exits 1 when something
must change before the machine can start.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rep, source, err := migrateFrom(envFiles, ecosystem)
			if err != nil {
				return err
			}
			rep.Write(cmd.OutOrStdout(), source, false)
			if out != "" {
				var b bytes.Buffer
				rep.Write(&b, source, true)
				if err := os.WriteFile(out, b.Bytes(), 0o600); err != nil {
					return fmt.Errorf("write %s: %w", out, err)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "wrote the new configuration, secrets included, to %s (mode 0600)\n", out)
			}
			switch {
			case len(rep.Refused) > 0:
				return fmt.Errorf("%d old setting(s) must change before this machine can start; see \"Must change\" above", len(rep.Refused))
			case rep.Problem != nil:
				return errors.New("the new configuration does not load yet; see the end of the output")
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&envFiles, "from-env", nil, "an old machine's env file (repeat for .env.secret and the deployment's)")
	cmd.Flags().StringVar(&ecosystem, "from-ecosystem", "", "the pm2-ecosystem.config.cjs the old generator wrote")
	cmd.Flags().StringVar(&out, "out", "", "also write the configuration with its secrets to this file (mode 0600)")
	return cmd
}

func migrateFrom(envFiles []string, ecosystem string) (*migrate.Report, string, error) {
	switch {
	case len(envFiles) == 0 && ecosystem == "":
		return nil, "", errors.New("give the old machine's configuration: --from-env FILE (repeatable) or --from-ecosystem pm2-ecosystem.config.cjs")
	case len(envFiles) > 0 && ecosystem != "":
		return nil, "", errors.New("give either --from-env or --from-ecosystem, not both: the ecosystem file already holds the machine's environment")
	case ecosystem != "":
		f, err := os.Open(ecosystem)
		if err != nil {
			return nil, "", fmt.Errorf("open the ecosystem file: %w", err)
		}
		defer f.Close()
		eco, err := migrate.ParseEcosystem(f, ecosystem)
		if err != nil {
			return nil, "", err
		}
		return migrate.FromEcosystem(eco), ecosystem, nil
	}
	env := map[string]string{}
	for _, name := range envFiles {
		f, err := os.Open(name)
		if err != nil {
			return nil, "", fmt.Errorf("open the env file: %w", err)
		}
		part, err := migrate.ParseEnv(f, name)
		f.Close()
		if err != nil {
			return nil, "", err
		}
		for k, v := range part { // later files win, as in `set -a; . .env; . .env.secret`
			env[k] = v
		}
	}
	return migrate.FromEnv(env), strings.Join(envFiles, ", "), nil
}

// printLegacy lists the old runtime's variables found in the environment and what became of
// them (`machine config validate`).
func printLegacy(w io.Writer, cfg *config.Config) {
	if len(cfg.Legacy) == 0 {
		return
	}
	fmt.Fprintf(w, "old variables of the emp machine (%d):\n", len(cfg.Legacy))
	for _, n := range cfg.Legacy {
		fmt.Fprintf(w, "  %-8s %s\n", n.Treatment, n.Sentence)
	}
}

// logLegacy logs, at start, each old variable the machine reads under a new name or ignores.
func logLegacy(log *slog.Logger, cfg *config.Config) {
	for _, n := range cfg.Legacy {
		log.Warn("old variable: "+n.Sentence, "variable", n.Var, "treatment", string(n.Treatment))
	}
}
