package broker

import (
	"context"
	"encoding/json"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Herd-free wake-up (ours, additive keys; the API still ZADDs and publishes job_submitted).
//
// Had every machine subscribe to job_submitted, each job would cost Redis one write to every
// machine's socket (measured: 15 ms of Redis CPU a PUBLISH with 1,000 subscribers, against
// 0.1 ms with 10) and one claim script per woken machine. Instead:
//
//   - Relays. At most RelayCount machines of the fleet hold a relay lease (KeyRelayPrefix+i,
//     renewed every relayEvery, lost after relayTTL). Only they subscribe to job_submitted and
//     job_requeued; each message becomes one token in jobs:wakeup:{service} (relay.lua, which
//     also makes every capability set forget the job's remembered non-match), or, for a job
//     whose requirements name a pool (a hard match), in jobs:wakeup:{service}@{pool}, so that
//     it wakes a machine of that pool, never one whose claim could not take it. Two relays hear
//     the same message and push one token: the copy is recognised by its hash.
//   - Waiters. Each machine with idle slots blocks in BLPOP on the token lists of its idle
//     slots' services (and of its pool: Routing.Pool); Redis hands each token to exactly one of
//     them, which wakes one idle slot. A token popped when no slot is idle any more goes back
//     to the head of its list.
//   - The fallback poll is taken in turns: an idle slot's poll claims only if it takes the poll
//     ticket of its capability set (KeyPollPrefix+fingerprint, held one poll interval), so
//     identical machines poll once an interval between them, not once each.
//
// Redis work per job is then one relay script per relay, one BLPOP answer and one claim,
// whatever the number of idle machines. No job is lost when a token is spent on a slot that
// cannot take it (its capabilities do not match, or the job waits for its retry backoff): the
// job stays in jobs:pending, and the poll of every capability set reaches it within a poll
// interval. The same poll covers a gap between relays (a relay that died loses its lease after
// relayTTL and another machine takes it).
const (
	RelayCount     = 2
	KeyRelayPrefix = "jobs:relay:" // + 0..RelayCount-1: the holder's token, expiring
	KeyWakePrefix  = "jobs:wakeup" // + ":" + service: the token lists; without a service: any
	KeyPollPrefix  = "jobs:poll:"  // + capability fingerprint: who polls this interval
	KeyMemoIndex   = "jobs:nomatch:index"
	relayEvery     = 5 * time.Second
	relayTTL       = 15 * time.Second
	wakeBlock      = 2 * time.Second
	wakeListMax    = 10000
	wakeListTTL    = 600 // seconds
)

var (
	relayScript     = script("relay")
	takeRelayScript = redis.NewScript(`
for i = 0, tonumber(ARGV[2]) - 1 do
  if redis.call('SET', KEYS[1] .. i, ARGV[1], 'NX', 'PX', ARGV[3]) then return i end
end
return -1`)
	renewRelayScript = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0`)
)

// wakeKey is the token list of a service ("": any service) for jobs that require pool ("":
// those that require none).
func wakeKey(service, pool string) string {
	k := KeyWakePrefix
	if service != "" {
		k += ":" + service
	}
	if pool != "" {
		k += "@" + pool
	}
	return k
}

// relay turns a job_submitted or job_requeued message into a wake token.
func (b *Broker) relay(ctx context.Context, payload string) error {
	var body struct {
		Service string `json:"service_required"`
		JobID   string `json:"job_id"`
	}
	_ = json.Unmarshal([]byte(payload), &body) // an unreadable message still wakes a slot of any service
	return relayScript.Run(ctx, b.rdb, nil, payload, body.JobID, body.Service, wakeListMax, wakeListTTL).Err()
}

// relayLease keeps trying to hold one of the RelayCount relay leases, and calls held(true)
// when it gets one and held(false) when it loses it. It returns when ctx ends, releasing the lease.
func (b *Broker) relayLease(ctx context.Context, log *slog.Logger, token string, held func(bool)) {
	key := ""
	defer func() {
		if key != "" {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer cancel()
			_ = unlockScript.Run(ctx, b.rdb, []string{key}, token).Err()
		}
	}()
	// The first attempt comes at once: a lone machine relays from the start.
	wait := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = relayEvery/2 + rand.N(relayEvery) // spread the fleet's attempts
		if key != "" {
			n, err := renewRelayScript.Run(ctx, b.rdb, []string{key}, token, relayTTL.Milliseconds()).Int64()
			if err == nil && n == 1 {
				continue
			}
			if err != nil && ctx.Err() == nil {
				log.Warn("relay lease not renewed; another machine takes over", "err", err)
			}
			key = ""
			held(false)
		}
		i, err := takeRelayScript.Run(ctx, b.rdb, []string{KeyRelayPrefix}, token, RelayCount, relayTTL.Milliseconds()).Int64()
		if err != nil || i < 0 {
			continue
		}
		key = KeyRelayPrefix + strconv.FormatInt(i, 10)
		wait = relayEvery
		held(true)
	}
}

// Slots is what Watch wakes: the machine's worker slots.
type Slots interface {
	// IdleServices lists the services of the slots waiting for work now.
	IdleServices() []string
	// Idle receives when a slot starts waiting.
	Idle() <-chan struct{}
	// Wake wakes one waiting slot serving service ("": any), and reports whether one was
	// waiting.
	Wake(service string) bool
	// WakeAll wakes every waiting slot (messages may have been missed).
	WakeAll()
}

// waitTokens hands wake tokens to idle slots until ctx ends.
func (b *Broker) waitTokens(ctx context.Context, log *slog.Logger, slots Slots) {
	delay := 100 * time.Millisecond
	for ctx.Err() == nil {
		services := slots.IdleServices()
		if len(services) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-slots.Idle():
			}
			continue
		}
		pool := b.routing.Pool
		keys := make([]string, 0, 2*len(services)+2)
		service := make(map[string]string, cap(keys)) // token list -> the service it wakes
		for _, s := range append(services, "") {
			keys = append(keys, wakeKey(s, ""))
			service[wakeKey(s, "")] = s
			if pool != "" {
				keys = append(keys, wakeKey(s, pool))
				service[wakeKey(s, pool)] = s
			}
		}
		got, err := b.rdb.BLPop(ctx, wakeBlock, keys...).Result()
		switch {
		case err == redis.Nil:
			continue
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			log.Warn("wake tokens unreadable; slots fall back to polling until Redis answers", "err", err, "retry_in", delay)
			select {
			case <-ctx.Done():
			case <-time.After(delay):
			}
			delay = min(delay*2, 5*time.Second)
			continue
		}
		delay = 100 * time.Millisecond
		if !slots.Wake(service[got[0]]) {
			// No slot waits any more: the token goes back first in line for another machine.
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			_ = b.rdb.LPush(ctx, got[0], got[1]).Err()
			cancel()
		}
	}
}

// PollTicket reports whether a slot with these capabilities may run its fallback poll now:
// one slot of each capability set, fleet-wide, polls each interval. A broker that does not
// answer gives the ticket (the claim then reports the broker's state).
func (b *Broker) PollTicket(ctx context.Context, caps []byte, every time.Duration) bool {
	ok, err := b.rdb.SetNX(ctx, KeyPollPrefix+fingerprintOf(caps), "1", every).Result()
	return ok || err != nil
}
