package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	tea "charm.land/bubbletea/v2"
	"github.com/spf13/cobra"

	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/control"
	"github.com/emp-job-queue/machine/core/machine"
	"github.com/emp-job-queue/machine/internal/safefs"
	"github.com/emp-job-queue/machine/tui"
)

func newConsoleCmd() *cobra.Command {
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "console",
		Short: "Attach the console to the running machine (quitting never stops it)",
		Long: `console attaches to the machine whose control socket is MACHINE_CONTROL_SOCKET
(default $MACHINE_RUN_DIR/control.sock), e.g. docker exec -it machine console.
Quitting the console leaves the machine running. Jobs, slots and services show as they
change; graphs and readings move every --interval.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkInterval(interval); err != nil {
				return err
			}
			client, err := control.Dial(cmd.Context(), envConfig().ControlSocket, interval)
			if err != nil {
				return err
			}
			defer client.Close()
			_, err = tea.NewProgram(tui.New(client, tui.Options{Interval: interval}), tui.ProgramOptions()...).Run()
			return err
		},
	}
	intervalFlag(cmd, &interval)
	return cmd
}

// intervalFlag adds --interval, how often the console's graphs and readings refresh.
func intervalFlag(cmd *cobra.Command, interval *time.Duration) {
	cmd.Flags().DurationVar(interval, "interval", control.DefaultInterval,
		"how often the console's graphs and readings refresh (1s shows every sample as it comes)")
}

// checkInterval says what is wrong with an --interval, if anything.
func checkInterval(d time.Duration) error {
	if d < control.MinInterval || d > control.MaxInterval {
		return fmt.Errorf("--interval %s is out of range; give one from %s to %s (the machine samples once a second)",
			d, control.MinInterval, control.MaxInterval)
	}
	return nil
}

// runWithConsole runs the core and the console in one process. The core logs to a file so
// the screen stays the console's. Quitting asks whether to stop the machine or detach.
func runWithConsole(ctx context.Context, stop context.CancelFunc, cfg *config.Config, m *machine.Machine, logFile string, interval time.Duration, stderr io.Writer) error {
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	client := control.Local(m.Control(), interval)
	model := tui.New(client, tui.Options{InProcess: true, Interval: interval})
	prog := tea.NewProgram(model, append(tui.ProgramOptions(), tea.WithContext(ctx))...)
	go func() {
		err := <-done
		done <- err
		prog.Quit()
	}()
	_, perr := prog.Run()
	client.Close()
	if perr != nil && ctx.Err() == nil {
		fmt.Fprintln(stderr, "machine: console failed:", perr, "- the machine keeps running headless")
	}
	if model.Outcome() == tui.StopMachine {
		stop()
	} else if ctx.Err() == nil {
		fmt.Fprintf(stderr, "machine: detached; still running headless (logs: %s). Attach with `machine console`; stop with Ctrl+C or SIGTERM.\n", logFile)
	}
	return <-done
}

// consoleLog opens the file the core logs to while the console owns the screen.
func consoleLog(cfg *config.Config) (*os.File, string, error) {
	path := filepath.Join(cfg.LogDir, "machine.log")
	if err := safefs.Dir(cfg.LogDir, "MACHINE_LOG_DIR", 0o755); err != nil {
		return nil, "", err
	}
	f, err := safefs.Append(path)
	return f, path, err
}
