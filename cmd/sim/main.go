// Command sim runs simulated fleets of machine cores against a real redis-server and prints
// what they cost Redis and how fast they pick jobs up.
//
//	go run ./cmd/sim -scenario fleet|demand|pools [-json] [-quick] [-cold] [-cache-gb N]
//
// Scenarios: fleet (N = 10, 100, 1000 machines; -quick: 10 and 30); demand (a job trace
// replayed against the demand tracker, model cache and autoscaler, and against the static
// baseline; -quick: a 40-minute trace); pools (a mixed trace on a fleet split into pools with
// affinity, against the same fleet uniform and FIFO; -quick: a shorter trace; -cold: the
// machines' model caches start empty; -cache-gb: their size, 200 GB). `make sim` runs every scenario.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"
	"syscall"
)

// scenarios by name; each returns its report (a JSON object) and a table for people.
var scenarios = map[string]func(opts) (map[string]any, string, error){
	"demand": demandScenario,
	"fleet":  fleetScenario,
	"pools":  poolsScenario,
}

type opts struct {
	quick  bool
	cold   bool    // pools: the machines' model caches start empty
	diskGB float64 // pools: each machine's model cache; 0: 200 GB
}

func main() {
	name := flag.String("scenario", "all", "the scenario to run: fleet, demand, pools, or all")
	asJSON := flag.Bool("json", false, "print one JSON object (every scenario's figures) instead of tables")
	quick := flag.Bool("quick", false, "small fleets and few jobs, for tests")
	cold := flag.Bool("cold", false, "pools: the machines' model caches start empty instead of filled by earlier traffic")
	cacheGB := flag.Float64("cache-gb", 200, "pools: each machine's model cache on disk, in GB")
	flag.Parse()
	var names []string
	if *name == "all" {
		for n := range scenarios {
			names = append(names, n)
		}
		slices.Sort(names)
	} else if scenarios[*name] == nil {
		fmt.Fprintf(os.Stderr, "sim: unknown scenario %q; use fleet, demand, pools or all\n", *name)
		os.Exit(2)
	} else {
		names = []string{*name}
	}
	raiseFileLimit()
	out := map[string]any{}
	for _, n := range names {
		report, table, err := scenarios[n](opts{quick: *quick, cold: *cold, diskGB: *cacheGB})
		if err != nil {
			fmt.Fprintf(os.Stderr, "sim: scenario %s: %v\n", n, err)
			os.Exit(1)
		}
		if !*asJSON {
			fmt.Printf("== %s ==\n%s\n", n, table)
		}
		for k, v := range report {
			out[k] = v
		}
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(out)
	}
}

// raiseFileLimit lifts the soft limit on open files to the hard one: a thousand machines in
// one process hold a few thousand sockets (each machine's pool and subscription are its own,
// as they would be on separate hosts).
func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil && l.Cur < l.Max {
		l.Cur = l.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
	}
}
