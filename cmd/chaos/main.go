// Command chaos runs the fault scenarios of internal/chaos (`make chaos`) and prints a table.
package main

import (
	"flag"
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/emp-job-queue/machine/internal/chaos"
)

func main() {
	bin := flag.String("machine", "bin/machine", "the machine binary")
	jobs := flag.Int("jobs", 40, "jobs per scenario")
	jobMS := flag.Int("job-ms", 800, "duration of each job")
	flag.Parse()
	dir, err := os.MkdirTemp("", "machine-chaos")
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
	defer os.RemoveAll(dir)
	results, err := chaos.Run(chaos.Params{Machine: *bin, Dir: dir, Jobs: *jobs, JobMS: *jobMS})
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tSUBMITTED\tCOMPLETED\tFAILED\tLOST\tDUPLICATES\tNOTE")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\n", r.Scenario, r.Submitted, r.Completed, r.Failed, r.Lost, r.Duplicates, r.Note)
	}
	tw.Flush()
	fmt.Println("goal: 0 lost, at most 1 duplicate per job that was running on a crashed machine")
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
}
