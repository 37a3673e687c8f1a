package machine

import (
	"time"

	"github.com/emp-job-queue/machine/core/autoscale"
)

// The machine's fixed intervals and timeouts, in one place. What an operator may tune lives in
// core/config instead.
const (
	// brokerPingEvery is how often liveness checks that the broker answers (/health,
	// machine_broker_up) and heartbeats the slots when their heartbeat is due.
	brokerPingEvery   = 2 * time.Second
	brokerPingTimeout = 2 * time.Second
	// servicePruneEvery prunes the claim script's cache of pending jobs' services.
	servicePruneEvery = 5 * time.Minute
	// queueDepthEvery counts the pending jobs this machine serves, for the console's header:
	// it scans the shared queue, so not often.
	queueDepthEvery = 10 * time.Second
	queueDepthScan  = 10000
	// durationsShown bounds the expected durations /status lists.
	durationsShown = 20
	// reapEvery is how often every machine offers to return jobs with expired leases (a Redis
	// lock keeps it to one machine at a time); leases are renewed every third of their length,
	// but not more often than minRenewEvery.
	reapEvery     = time.Second
	reapTimeout   = 2 * time.Second
	minRenewEvery = 200 * time.Millisecond
	// connectFirstRetry doubles up to connectMaxRetry while the broker does not answer at start.
	connectFirstRetry = 200 * time.Millisecond
	connectMaxRetry   = 5 * time.Second
	// slotStartTimeout bounds registering new slots.
	slotStartTimeout = 10 * time.Second
	// finalWritesGrace is how long, past the drain timeout, shutdown waits for the releases and
	// the last status to reach a broker that may not answer.
	finalWritesGrace = 3 * time.Second
	// trackerRestartAfter is the pause before the demand tracker subscribes again after an error.
	trackerRestartAfter = 2 * time.Second
	// demandPublishEvery is how often the demand tracker's view is copied into the state store
	// for the console, listing at most demandViewModels models.
	demandPublishEvery = 2 * time.Second
	demandViewModels   = 10
	// autoscaleEvery is how often the autoscaler decides (MACHINE_AUTOSCALE); a load must stay
	// under autoscaleShrinkBelow of a connector's slots for autoscaleShrinkAfter before a slot
	// goes; a connector whose change failed is not tried again within autoscaleRetryAfter.
	autoscaleEvery       = 10 * time.Second
	autoscaleShrinkAfter = time.Minute
	autoscaleShrinkBelow = 0.5
	autoscaleRetryAfter  = 5 * time.Minute
)

// autoscaleHeadroom is what the machine must have free before the autoscaler adds work: no CPU
// limit, since a busy CPU is what jobs waiting for slots look like.
var autoscaleHeadroom = autoscale.Limits{MinFreeGPUMemGB: 2, MaxGPUUtil: 0.95, MinFreeRAMGB: 1}

// autoscaleTick is the autoscaler's period: autoscaleEvery, shorter in tests.
var autoscaleTick = autoscaleEvery

// The model cache's intervals and bounds (MACHINE_MODEL_CACHE_GB).
const (
	// modelPrefetchEvery is how often the prefetch loop asks the demand tracker which models
	// pending jobs want (MACHINE_MODEL_PREFETCH downloads at once), at most modelPrefetchBatch
	// of them a round.
	modelPrefetchEvery = 15 * time.Second
	modelPrefetchBatch = 8
	// modelCacheStatusEvery refreshes the cache's figures in the state store (/status, the
	// console, metrics) besides the refresh after every download and completed job.
	modelCacheStatusEvery = 5 * time.Second
	// advertiseMaxModels bounds the models the claim is told are on disk or in VRAM (sent with
	// every claim).
	advertiseMaxModels = 256
)

// modelPrefetchTick is the prefetch loop's period: modelPrefetchEvery, shorter in tests.
var modelPrefetchTick = modelPrefetchEvery
