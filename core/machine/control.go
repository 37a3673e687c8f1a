package machine

import (
	"context"
	"fmt"
	"time"

	"github.com/emp-job-queue/machine/core/autoscale"
	"github.com/emp-job-queue/machine/core/control"
	"github.com/emp-job-queue/machine/core/state"
	"github.com/emp-job-queue/machine/gpu"
)

// Control is the machine as the control API serves it.
func (m *Machine) Control() control.Core { return (*core)(m) }

type core Machine

func (c *core) m() *Machine { return (*Machine)(c) }

// Changes implements control.Core.
func (c *core) Changes() (events, readings <-chan struct{}, stop func()) {
	return c.store.SubscribeSplit()
}

// Snapshot implements control.Core: the state store, the plan and the sampler's history.
func (c *core) Snapshot() control.Snapshot {
	m := c.m()
	snap := m.store.Snapshot()
	now := time.Now()
	out := control.Snapshot{
		Seq: snap.Version,
		Machine: control.Machine{
			ID: snap.MachineID, Pool: snap.Pool, Phase: string(snap.Phase), Paused: snap.Paused,
			UptimeMS: now.Sub(snap.StartedAt).Milliseconds(), BrokerURL: snap.Broker.URL,
			BrokerConnected: snap.Broker.Connected, BrokerEmbedded: snap.Broker.Embedded,
			QueueDepth: snap.QueueDepth, GPUSource: snap.GPUSource, Version: m.version,
		},
	}
	sampler := m.sampler.Load()
	for _, r := range snap.Telemetry.GPUs {
		reason, bad := snap.Telemetry.Unhealthy[r.Index]
		g := control.GPU{
			Index: r.Index, Name: r.Name, MIG: r.MIG, Healthy: !bad, Reason: reason,
			Util: control.Reading(r.UtilGPU), MemUsedMB: control.Reading(r.MemoryUsedMB), MemTotalMB: control.Reading(r.MemoryTotalMB),
			TempC: control.Reading(r.TemperatureC), PowerW: control.Reading(r.PowerW), PowerLimit: control.Reading(r.PowerLimitW),
		}
		if sampler != nil {
			h := sampler.History(r.Index, gpu.Utilization)
			g.History = rounded(h, 1)
		}
		for _, sl := range snap.Slots {
			if sl.GPU == r.Index && sl.JobID != "" {
				g.Jobs = append(g.Jobs, sl.JobID)
			}
		}
		out.GPUs = append(out.GPUs, g)
	}
	for _, st := range snap.Services {
		var up int64
		if st.PID > 0 {
			up = now.Sub(st.StartedAt).Milliseconds()
		}
		out.Services = append(out.Services, control.Service{
			Name: st.Name, State: string(st.State), PID: st.PID, Restarts: st.Restarts,
			Healthy: st.Ready, Port: st.Port, UptimeMS: up, Error: st.Error,
		})
	}
	for _, c := range snap.Connectors {
		conn := control.Connector{Name: c.Name, State: c.State, Error: c.Error}
		if c.State == state.ConnectorEnabled && (snap.Paused || snap.Phase == state.Draining) {
			conn.State = state.ConnectorDraining
		}
		for _, sl := range snap.Slots {
			if sl.Connector != c.Name {
				continue
			}
			conn.Slots++
			conn.Done += sl.Completed
			conn.Failed += sl.Failed
			if sl.JobID != "" {
				conn.Busy++
				out.Jobs = append(out.Jobs, control.Job{
					ID: sl.JobID, Slot: sl.ID, Connector: sl.Connector, Service: sl.JobService, GPU: sl.GPU,
					Progress: sl.Progress, Message: sl.Message, ElapsedMS: now.Sub(sl.JobStartedAt).Milliseconds(),
				})
			}
		}
		out.Connectors = append(out.Connectors, conn)
	}
	out.Autoscaler = autoscalerView(snap.Autoscaler, now)
	if c := snap.ModelCache; c.On {
		out.ModelCache = control.ModelCache{On: true, UsedBytes: c.UsedBytes, BudgetBytes: c.BudgetBytes, Hits: c.Hits,
			Misses: c.Misses, Downloads: c.Downloads, Evictions: c.Evictions, OnDisk: len(c.OnDisk),
			Downloading: c.Downloading, InVRAM: c.InVRAM, Models: cachedModels(c)}
	}
	out.Demand = demandConsoleView(snap.Demand, now)
	for _, ch := range snap.Changes {
		out.Changes = append(out.Changes, control.Change{ID: ch.ID, What: ch.What, State: ch.State, Message: ch.Message, Error: ch.Error})
	}
	for _, f := range snap.Recent[max(0, len(snap.Recent)-20):] {
		out.Recent = append(out.Recent, control.Finished{
			ID: f.JobID, Service: f.Service, Outcome: f.Outcome, Error: f.Error, DurationMS: f.Duration.Milliseconds(),
			Resources: f.Resources,
		})
	}
	for _, c := range snap.Costs {
		out.Costs = append(out.Costs, control.ServiceCost{Service: c.Service, Jobs: c.Jobs, RunMeanMS: c.RunMeanMS,
			RunP95MS: c.RunP95MS, WhMean: c.WhMean, WhP95: c.WhP95, GPUSeconds: c.GPUSeconds})
	}
	for _, d := range snap.Durations {
		out.Durations = append(out.Durations, control.ExpectedDuration{Service: d.Service, Model: d.Model,
			EWMAMS: d.EWMA.Milliseconds(), Count: d.Count})
	}
	addDetail(&out, snap, sampler, now)
	return out
}

// Do implements control.Core.
func (c *core) Do(ctx context.Context, cmd control.Command) control.Result {
	m := c.m()
	switch cmd.Op {
	case control.EnableConnector, control.DisableConnector, control.SetConcurrency:
		rec := m.rec.Load()
		if rec == nil {
			return control.Fail("the machine is not running yet; try again once it is ready")
		}
		var ch state.Change
		var err error
		switch cmd.Op {
		case control.EnableConnector:
			ch, err = rec.Enable(cmd.Connector, cmd.Count)
		case control.DisableConnector:
			ch, err = rec.Disable(cmd.Connector)
		default:
			ch, err = rec.Resize(cmd.Connector, cmd.Count)
		}
		if err != nil {
			return control.Fail("%v", err)
		}
		return control.Result{OK: true, Message: ch.Message, Change: ch.ID}
	case control.Drain:
		m.paused.Store(true)
		m.store.SetPaused(true)
		return control.Result{OK: true, Message: "draining: slots finish their jobs and claim nothing new; resume with the same key"}
	case control.Resume:
		m.paused.Store(false)
		m.store.SetPaused(false)
		return control.Result{OK: true, Message: "resumed: slots claim again"}
	case control.RestartService, control.StopService, control.StartService, control.Logs:
		sup := m.services.Load()
		if sup == nil {
			return control.Fail("the machine is not running its services yet")
		}
		switch cmd.Op {
		case control.Logs:
			lines, err := sup.Logs(cmd.Service, cmd.Lines)
			if err != nil {
				return control.Fail("%v", err)
			}
			return control.Result{OK: true, Lines: lines}
		case control.RestartService:
			if err := sup.Restart(cmd.Service); err != nil {
				return control.Fail("%v", err)
			}
			return control.Result{OK: true, Message: fmt.Sprintf("restarting %s", cmd.Service)}
		case control.StopService:
			if err := sup.Stop(cmd.Service); err != nil {
				return control.Fail("%v", err)
			}
			return control.Result{OK: true, Message: fmt.Sprintf("stopping %s", cmd.Service)}
		default:
			if err := sup.Start(cmd.Service); err != nil {
				return control.Fail("%v", err)
			}
			return control.Result{OK: true, Message: fmt.Sprintf("starting %s", cmd.Service)}
		}
	default:
		return control.Fail("unknown command %q", cmd.Op)
	}
}

// autoscalerView is the console's summary of the autoscaler.
func autoscalerView(a state.Autoscaler, now time.Time) control.Autoscaler {
	v := control.Autoscaler{On: a.On, Note: a.Note, Queue: a.QueueLength, Count: len(a.Decisions)}
	for _, n := range a.Pending {
		v.Pending += n
	}
	for _, d := range a.Decisions {
		what := fmt.Sprintf("%s %s to %d slot(s)", d.Kind, d.Connector, d.Count)
		if d.Kind == string(autoscale.Disable) {
			what = "disable " + d.Connector
		}
		v.Recent = append(v.Recent, control.Decision{What: what, Reason: d.Reason, Outcome: d.Outcome, AgeMS: now.Sub(d.At).Milliseconds()})
	}
	if n := len(v.Recent); n > 0 {
		last := v.Recent[n-1]
		v.Last = &last
	}
	return v
}
