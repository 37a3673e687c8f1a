// Command machine turns one GPU box into a worker of the emp-job-queue Redis broker.
//
//	machine                   the core and the console in one process (on a terminal)
//	machine --no-tui          run the headless core (production)
//	machine console           attach the console to a running core
//	machine plan [--json]     print what the configuration implies
//	machine submit …          write jobs exactly as the API does
//	machine config validate   check the configuration, listing every problem
//	machine health            exit 0 when the running machine's /health says healthy
//	machine migrate …         the configuration equivalent to an old emp machine's
//	machine drain [--wait]    stop claiming (a Kubernetes preStop hook)
//	machine init --template   write a commented env file for a common setup
//	machine version
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/machine"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	root := newRoot()
	// Installed as "console" too (a link in the image): `docker exec -it machine console`.
	if filepath.Base(os.Args[0]) == "console" {
		root.SetArgs(append([]string{"console"}, os.Args[1:]...))
	}
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "machine:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	var noTUI bool
	var interval time.Duration
	root := &cobra.Command{
		Use:   "machine",
		Short: "Run this box as a worker of the Redis job broker",
		Long: `machine reads its configuration from the environment (see README), runs worker slots that
claim jobs from the broker at HUB_REDIS_URL and execute them through connectors, and serves
/health, /status and /metrics on MACHINE_HEALTH_PORT. With no HUB_REDIS_URL it starts an
embedded broker and simulated GPUs, so it runs anywhere.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkInterval(interval); err != nil {
				return err
			}
			return run(cmd.ErrOrStderr(), noTUI, interval)
		},
	}
	root.Flags().BoolVar(&noTUI, "no-tui", false, "run headless with JSON logs (production)")
	intervalFlag(root, &interval)
	root.AddCommand(newPlanCmd(), newSubmitCmd(), newConfigCmd(), newHealthCmd(), newInstallCmd(), newConsoleCmd(), newMigrateCmd(), newDrainCmd(), newInitCmd(), &cobra.Command{
		Use: "version", Short: "Print the version", Args: cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) { fmt.Fprintln(cmd.OutOrStdout(), "machine", version) },
	})
	return root
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func newLogger(w io.Writer, json bool, level string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lv}
	if json {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func run(stderr io.Writer, noTUI bool, interval time.Duration) error {
	cfg, err := config.FromEnv()
	if err != nil {
		return err
	}
	terminal := !noTUI && isTerminal(os.Stdout) && isTerminal(os.Stdin)
	logOut, logPath := stderr, ""
	if terminal {
		f, path, err := consoleLog(cfg)
		if err != nil {
			return fmt.Errorf("open the console's log file: %w; run with --no-tui", err)
		}
		defer f.Close()
		logOut, logPath = f, path
	}
	log := newLogger(logOut, true, cfg.LogLevel)
	logLegacy(log, cfg) // migrate.go
	gpus, note, err := machine.OpenGPUs(cfg)
	if err != nil {
		return err
	}
	defer gpus.Close()
	if note != "" {
		log.Info("GPUs are simulated", "why", note, "count", cfg.GPUCount)
	}
	m, err := machine.New(cfg, machine.Options{Log: log, Version: version, GPUs: gpus})
	if err != nil {
		return err
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(signals)
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case sig := <-signals:
			log.Info("stopping: draining in-flight jobs (send the signal again to return them to the queue now)", "signal", sig.String())
			stop()
		case <-done:
			return
		}
		select {
		case <-signals:
			log.Warn("stopping now: in-flight jobs go back to the queue")
			m.StopNow()
		case <-done:
		}
	}()
	if terminal {
		err = runWithConsole(ctx, stop, cfg, m, logPath, interval, stderr)
	} else {
		err = m.Run(ctx)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}
