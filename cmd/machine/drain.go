package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/control"
)

func newDrainCmd() *cobra.Command {
	var wait bool
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "drain",
		Short: "Stop the running machine claiming jobs; with --wait, until its jobs in flight finish (a Kubernetes preStop hook)",
		Long: `drain tells the machine on MACHINE_CONTROL_SOCKET to claim nothing new (the console's d key).
With --wait it returns once no job is in flight, or after --timeout (default MACHINE_DRAIN_TIMEOUT);
the machine's SIGTERM then has nothing to wait for. The console's d key resumes it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.FromEnv()
			if err != nil {
				return err
			}
			if !cmd.Flags().Changed("timeout") {
				timeout = cfg.DrainTimeout
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout+5*time.Second)
			defer cancel()
			return drain(ctx, cmd.OutOrStdout(), cfg.ControlSocket, wait, timeout)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until no job is in flight")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Minute, "longest wait (default MACHINE_DRAIN_TIMEOUT)")
	return cmd
}

func drain(ctx context.Context, out io.Writer, socket string, wait bool, timeout time.Duration) error {
	client, err := control.Dial(ctx, socket, 0)
	if err != nil {
		return err
	}
	defer client.Close()
	res, err := client.Do(ctx, control.Command{Op: control.Drain})
	if err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	if !res.OK {
		return fmt.Errorf("drain: %s", res.Error)
	}
	fmt.Fprintln(out, res.Message)
	if !wait {
		return nil
	}
	deadline := time.After(timeout)
	inFlight := -1
	for {
		select {
		case snap, ok := <-client.Updates():
			if !ok {
				fmt.Fprintln(out, "the machine went away")
				return nil
			}
			inFlight = len(snap.Jobs)
			if inFlight == 0 {
				fmt.Fprintln(out, "drained: no job in flight")
				return nil
			}
		case <-deadline:
			fmt.Fprintf(out, "%d job(s) still in flight after %s; stopping the machine returns them to the queue\n", inFlight, timeout)
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
