package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

const heartbeatTTL = 60 * time.Second

// CancelFunc is told that the API cancelled a job (PROTOCOL §7).
type CancelFunc func(jobID, reason string)

// Watch wakes idle slots for claimable jobs without waking the whole fleet (see relay.go), and
// hands the jobs the API cancels (cancel_job) to cancel. It subscribes to cancel_job always,
// and to job_submitted and job_requeued only while this machine holds a relay lease; it hands
// wake tokens to idle slots. It returns when ctx ends. Connection errors are logged and
// retried; after every (re)subscription every idle slot is woken, since messages published
// while disconnected are lost.
func (b *Broker) Watch(ctx context.Context, log *slog.Logger, slots Slots, cancel CancelFunc) {
	ps := b.rdb.Subscribe(ctx, ChanCancel)
	// Receive blocks in a socket read that ctx does not interrupt; closing the subscription does.
	stop := context.AfterFunc(ctx, func() { ps.Close() })
	defer stop()
	defer ps.Close()

	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { b.waitTokens(ctx, log, slots) })
	wg.Go(func() {
		b.relayLease(ctx, log, relayToken(), func(held bool) {
			var err error
			if held {
				log.Debug("relaying job wake-ups for the fleet")
				err = ps.Subscribe(ctx, ChanSubmitted, ChanRequeued)
			} else {
				err = ps.Unsubscribe(ctx, ChanSubmitted, ChanRequeued)
			}
			if err != nil && ctx.Err() == nil {
				log.Warn("relay subscription not changed; the fallback poll covers it", "err", err)
			}
		})
	})

	delay := 100 * time.Millisecond
	for {
		msg, err := ps.Receive(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			log.Warn("job wake-up subscription lost; slots fall back to polling until it is back", "err", err, "retry_in", delay)
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
			delay = min(delay*2, 5*time.Second)
			continue
		}
		delay = 100 * time.Millisecond
		switch m := msg.(type) {
		case *redis.Subscription:
			// (Re)subscribed: messages may have gone by unheard, so every idle slot claims once.
			// For job_submitted this covers, for this machine's slots, the jobs submitted while
			// no relay was subscribed (its own start as the relay, or a relay that died), which
			// would otherwise wait for the fallback poll; other machines' reach them at theirs.
			if m.Kind == "subscribe" && (m.Channel == ChanCancel || m.Channel == ChanSubmitted) {
				b.memory.missed()
				slots.WakeAll()
			}
		case *redis.Message:
			if m.Channel != ChanCancel {
				rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
				if err := b.relay(rctx, m.Payload); err != nil && ctx.Err() == nil {
					log.Warn("job wake-up not relayed; the fallback poll picks the job up", "err", err)
				}
				rcancel()
				continue
			}
			var body struct {
				JobID  string `json:"job_id"`
				Reason string `json:"reason"`
			}
			if json.Unmarshal([]byte(m.Payload), &body) == nil && body.JobID != "" && cancel != nil {
				cancel(body.JobID, body.Reason)
			}
		}
	}
}

// relayToken names this process's hold on a relay lease.
func relayToken() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
