package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/emp-job-queue/machine/deploy"
)

func newInitCmd() *cobra.Command {
	var name, out string
	var list, force bool
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Write a commented env file for a common setup (--list shows them)",
		Example: `  machine init --list
  machine init --template comfyui-gpu --out machine.env
  set -a; . ./machine.env; set +a; machine config validate`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if list {
				listTemplates(cmd.OutOrStdout())
				return nil
			}
			tpl, ok := deploy.Lookup(name)
			if !ok {
				var b strings.Builder
				listTemplates(&b)
				what := fmt.Sprintf("unknown template %q", name)
				if name == "" {
					what = "no template named (--template NAME)"
				}
				return fmt.Errorf("%s; the templates are:\n%s", what, strings.TrimRight(b.String(), "\n"))
			}
			if out == "" || out == "-" {
				_, err := cmd.OutOrStdout().Write(tpl.Body)
				return err
			}
			flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
			if force {
				flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
			}
			// 0600: the operator fills secrets into it.
			f, err := os.OpenFile(out, flags, 0o600)
			if errors.Is(err, os.ErrExist) {
				return fmt.Errorf("%s exists; choose another --out, or pass --force to overwrite it", out)
			}
			if err != nil {
				return err
			}
			if _, err := f.Write(tpl.Body); err != nil {
				f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			next := "then check it"
			if len(tpl.Secrets) > 0 {
				next = "fill in " + strings.Join(tpl.Secrets, ", ") + ", then check it"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (%s); %s: set -a; . %s; set +a; machine config validate\n", out, tpl.Name, next, out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "template", "", "the setup: "+strings.Join(deploy.TemplateNames(), ", "))
	f.StringVar(&out, "out", "", "file to write (default: standard output)")
	f.BoolVar(&list, "list", false, "list the templates")
	f.BoolVar(&force, "force", false, "overwrite --out if it exists")
	return cmd
}

func listTemplates(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, t := range deploy.Templates() {
		fmt.Fprintf(tw, "  %s\t%s\n", t.Name, t.Summary)
	}
	tw.Flush()
}
