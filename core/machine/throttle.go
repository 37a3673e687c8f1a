package machine

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/emp-job-queue/machine/core/connectors/throttle"
)

// throttleLocked returns the throttle record of a connector, made the first time; m.mu is held.
// Every instance of the connector reports into the same record (connectors.Env.Throttle), which
// publishes each new state to the state store (for /status, the console and the autoscaler),
// the metrics and, when the breaker changes, the log.
func (m *Machine) throttleLocked(connector string) *throttle.Recorder {
	if r, ok := m.throttles[connector]; ok {
		return r
	}
	if m.throttles == nil {
		m.throttles = map[string]*throttle.Recorder{}
	}
	// Confined to notify, which the recorder calls under its lock, in order. The series are
	// made on the first report, so connectors that are no remote API have none.
	var (
		seen    uint64
		breaker throttle.Breaker
		counted prometheus.Counter
		open    prometheus.Gauge
	)
	r := throttle.New(func(s throttle.State) {
		if counted == nil {
			counted = m.metrics.ConnectorThrottled.WithLabelValues(connector)
			open = m.metrics.ConnectorBreakerOpen.WithLabelValues(connector)
		}
		counted.Add(float64(s.RateLimitedTotal - seen))
		seen = s.RateLimitedTotal
		if s.Breaker != breaker {
			switch s.Breaker {
			case throttle.Open:
				open.Set(1)
				m.log.Warn("connector circuit breaker open; its jobs are left to other machines for a while",
					"connector", connector, "last_error", lastError(s))
			case throttle.HalfOpen:
				open.Set(0.5)
				m.log.Info("connector circuit breaker half-open: trying one request", "connector", connector)
			default:
				open.Set(0)
				if breaker != "" {
					m.log.Info("connector circuit breaker closed again", "connector", connector)
				}
			}
			breaker = s.Breaker
		}
		m.store.SetThrottle(connector, s)
	})
	m.throttles[connector] = r
	return r
}

func lastError(s throttle.State) string {
	if len(s.Errors) == 0 {
		return ""
	}
	return s.Errors[len(s.Errors)-1].Text
}
