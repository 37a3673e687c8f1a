package broker

import (
	"context"
	"encoding/json"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"
)

const heartbeatTTL = 60 * time.Second

// WakeFunc is told the service of a job that just became claimable; "" means any service
// (after a reconnect, when messages may have been missed).
type WakeFunc func(service string)

// CancelFunc is told that the API cancelled a job (PROTOCOL §7).
type CancelFunc func(jobID, reason string)

// Watch subscribes to job_submitted (published by the API) and job_requeued (ours) and calls
// wake for each, so idle slots claim at once instead of waiting for a poll, and to cancel_job,
// whose jobs it hands to cancel. It returns when ctx ends. Connection errors are logged and
// retried; after every (re)subscription wake("") runs, since messages published while
// disconnected are lost.
func (b *Broker) Watch(ctx context.Context, log *slog.Logger, wake WakeFunc, cancel CancelFunc) {
	ps := b.rdb.Subscribe(ctx, ChanSubmitted, ChanRequeued, ChanCancel)
	// Receive blocks in a socket read that ctx does not interrupt; closing the subscription does.
	stop := context.AfterFunc(ctx, func() { ps.Close() })
	defer stop()
	defer ps.Close()
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
			b.memory.missed()
			wake("")
		case *redis.Message:
			var body struct {
				Service string `json:"service_required"`
				JobID   string `json:"job_id"`
				Reason  string `json:"reason"`
			}
			if json.Unmarshal([]byte(m.Payload), &body) != nil {
				body.Service = ""
			}
			if m.Channel != ChanCancel && body.JobID != "" {
				b.memory.submitted(body.JobID) // the job was written again: what it matches may have changed
			}
			if m.Channel == ChanCancel {
				if body.JobID != "" && cancel != nil {
					cancel(body.JobID, body.Reason)
				}
				continue
			}
			wake(body.Service)
		}
	}
}
