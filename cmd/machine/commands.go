package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/emp-job-queue/machine/core/broker"
	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/connectors/registry"
	"github.com/emp-job-queue/machine/core/embedded"
	"github.com/emp-job-queue/machine/core/machine"
	"github.com/emp-job-queue/machine/core/plan"
)

func newPlanCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Print the worker slots, GPU bindings and services the configuration implies, what they need from the box, and its problems",
		Long: `plan prints what the configuration implies. Problems (a bad value, a missing key) are listed
after the plan; it exits 1 only when no plan can be made at all.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, p, problems := loadPlan()
			if p == nil {
				return problems
			}
			req, err := requirements(cfg, p)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(planWithRequirements{p, req}); err != nil {
					return err
				}
			} else {
				printPlan(out, cfg, p)
				printRequirements(out, req)
			}
			if problems != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "\n%v\n", problems)
			}
			return refused(req)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the plan as JSON")
	return cmd
}

func gpuLabel(g int) string {
	if g == plan.NoGPU {
		return "-"
	}
	return fmt.Sprint(g)
}

func printPlan(w io.Writer, cfg *config.Config, p *plan.Plan) {
	gpus := fmt.Sprint(p.GPUCount)
	if cfg.SimulatedGPUs && p.GPUCount > 0 {
		gpus += " (simulated: no NVIDIA driver, or GPU_MODE=mock)"
	} else if p.GPUCount > 0 {
		gpus += fmt.Sprintf(" × %s, %.0f GB", cfg.GPUModel, cfg.GPUMemoryGB)
	}
	broker := cfg.RedactedRedisURL()
	if broker == "" {
		broker = "embedded (no HUB_REDIS_URL)"
	}
	fmt.Fprintf(w, "machine %s   GPUs %s   broker %s\n\n", p.MachineID, gpus, broker)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tCONNECTOR\tGPU\tSERVICE\tCLAIMS")
	for _, s := range p.Slots {
		svc := s.Service
		if svc == "" {
			svc = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.ID, s.Connector, gpuLabel(s.GPU), svc, strings.Join(s.JobServices, ","))
	}
	tw.Flush()
	if len(p.Services) == 0 {
		fmt.Fprintln(w, "\nno internal services: every connector runs in-process or calls a remote API")
		return
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tKIND\tGPU\tPORT\tSLOTS")
	for _, s := range p.Services {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", s.Name, s.Kind, gpuLabel(s.GPU), s.Port, strings.Join(s.Slots, ","))
	}
	tw.Flush()
}

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "config", Short: "Inspect the configuration"}
	cmd.AddCommand(&cobra.Command{
		Use:   "validate",
		Short: "Check the configuration from the environment, print its plan and list every problem",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, p, problems := loadPlan()
			if p != nil {
				printPlan(cmd.OutOrStdout(), cfg, p)
				fmt.Fprintln(cmd.OutOrStdout())
			}
			if problems != nil {
				return problems
			}
			var names []string
			for _, c := range cfg.Connectors {
				names = append(names, c.Name)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "configuration is valid: machine %s, connectors %s\n", cfg.MachineID, strings.Join(names, ","))
			printLegacy(cmd.OutOrStdout(), cfg) // migrate.go
			return nil
		},
	})
	return cmd
}

// loadPlan reads the configuration, lets the GPU source fill what the environment left unset
// (as `machine` does), and plans. Every problem found on the way (bad values, unknown
// connectors, missing keys) comes back as one config.Problems, next to the plan whenever one
// could still be made.
func loadPlan() (*config.Config, *plan.Plan, config.Problems) {
	var problems config.Problems
	note := func(err error) {
		var ps config.Problems
		switch {
		case err == nil:
		case errors.As(err, &ps):
			problems = append(problems, ps...)
		default:
			problems = append(problems, err.Error())
		}
	}
	cfg, err := config.FromEnv()
	note(err)
	src, _, err := machine.OpenGPUs(cfg)
	if err != nil { // a plan for GPUs nobody can read would be fiction
		note(err)
		return cfg, nil, problems
	}
	note(src.Close())
	note(registry.Check(cfg))
	note(machine.CheckModelCache(cfg))
	p, err := plan.New(cfg)
	note(err)
	if len(problems) == 0 {
		return cfg, p, nil
	}
	return cfg, p, problems
}

// envConfig is the configuration for commands that need only a part of it (where the broker,
// the socket or the HTTP port is): its problems are not theirs to report.
func envConfig() *config.Config {
	cfg, _ := config.FromEnv()
	return cfg
}

// brokerURL is HUB_REDIS_URL, or the URL a running machine's embedded broker advertised.
func brokerURL() (string, error) {
	cfg := envConfig()
	if cfg.RedisURL != "" {
		return cfg.RedisURL, nil
	}
	runDir := cfg.RunDir
	data, err := os.ReadFile(embedded.URLFile(runDir))
	if err != nil {
		return "", fmt.Errorf("no broker to submit to: set HUB_REDIS_URL, or start `machine` (make run) first so its embedded broker is found in %s", runDir)
	}
	return strings.TrimSpace(string(data)), nil
}

func newSubmitCmd() *cobra.Command {
	var (
		service, payload, requirements, customer, workflow, jobCtx string
		priority, count, maxRetries                                int
	)
	cmd := &cobra.Command{
		Use:   "submit",
		Short: "Submit jobs exactly as the API does (same fields, score and job_submitted message)",
		Example: `  machine submit --service simulation --count 20
  machine submit --service mock --payload '{"delay_ms":500,"should_fail":true}'
  machine submit --service simulation --requirements '{"hardware":{"gpu_memory_gb":16}}' --priority 80`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if count < 1 {
				return fmt.Errorf("--count must be at least 1")
			}
			url, err := brokerURL()
			if err != nil {
				return err
			}
			opts, err := redis.ParseURL(url)
			if err != nil {
				return fmt.Errorf("broker URL %s: %w", config.RedactURL(url), err)
			}
			rdb := redis.NewClient(opts)
			defer rdb.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			spec := broker.JobSpec{
				Service: service, Priority: priority, Payload: json.RawMessage(payload),
				Requirements: json.RawMessage(requirements), CustomerID: customer, WorkflowID: workflow,
				Ctx: json.RawMessage(jobCtx),
			}
			if cmd.Flags().Changed("max-retries") {
				spec.MaxRetries = &maxRetries
			}
			b := broker.New(rdb)
			for range count {
				id, err := b.Submit(ctx, spec)
				if err != nil {
					return fmt.Errorf("%w (broker %s)", err, config.RedactURL(url))
				}
				fmt.Fprintln(cmd.OutOrStdout(), id)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&service, "service", "simulation", "service_required of the job")
	f.StringVar(&payload, "payload", "{}", "job payload (JSON)")
	f.IntVar(&priority, "priority", 50, "priority (higher first)")
	f.StringVar(&requirements, "requirements", "", "requirements (JSON), e.g. '{\"hardware\":{\"gpu_memory_gb\":16}}'")
	f.IntVar(&count, "count", 1, "number of jobs")
	f.StringVar(&customer, "customer", "", "customer_id")
	f.StringVar(&workflow, "workflow", "", "workflow_id")
	f.StringVar(&jobCtx, "ctx", "", "storage context (JSON)")
	f.IntVar(&maxRetries, "max-retries", 3, "max_retries")
	return cmd
}

func newHealthCmd() *cobra.Command {
	var url string
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Exit 0 when the running machine reports healthy (for Docker's HEALTHCHECK)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if url == "" {
				c := envConfig()
				port := c.HealthPort
				if port == 0 {
					return fmt.Errorf("MACHINE_HEALTH_PORT is 0 (any free port), so the health URL is unknown; give it with --url")
				}
				url = "http://" + net.JoinHostPort(config.LocalHTTPHost(c.HTTPAddr), strconv.Itoa(port)) + "/health"
			}
			client := &http.Client{Timeout: 3 * time.Second}
			resp, err := client.Get(url)
			if err != nil {
				return fmt.Errorf("no machine answers at %s: %w", url, err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("machine is unhealthy (%s): %s", resp.Status, strings.TrimSpace(string(body)))
			}
			fmt.Fprintln(cmd.OutOrStdout(), "healthy")
			return nil
		},
	}
	cmd.Flags().StringVar(&url, "url", "", "health URL (default http://$MACHINE_HTTP_ADDR:$MACHINE_HEALTH_PORT/health, 127.0.0.1 when every interface is bound)")
	return cmd
}
