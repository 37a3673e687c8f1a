package machine

import "time"

// The autoscaler decides often in tests, so that they wait for its decisions, not its period.
func init() {
	autoscaleTick = 100 * time.Millisecond
	modelPrefetchTick = 100 * time.Millisecond
}
