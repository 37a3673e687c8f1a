package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Keys of leases (ours, additive).
const (
	KeyLeases     = "jobs:leases" // ZSET job id → lease expiry (ms)
	keyReaperLock = "jobs:reaper:lock"
)

var (
	renewScript  = script("renew")
	reapScript   = script("reap")
	unlockScript = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`)
)

// Policy is how jobs are leased and retried. The zero value leases nothing and retries at once,
// as the old workers did.
type Policy struct {
	Lease           time.Duration // a claimed job is re-queued if its lease is not renewed for this long
	AvoidLastWorker time.Duration // a retry goes to another worker first, for this long
	RetryBackoff    time.Duration // the first retry waits this long; each next one twice as long
	RetryBackoffMax time.Duration
	// MaxJobBytes refuses claimed jobs larger than this (the whole hash, payload included) as a
	// permanent failure, before they are decoded; 0: no limit.
	MaxJobBytes int
}

// SetPolicy sets the lease and retry policy. Call it before the broker is shared.
func (b *Broker) SetPolicy(p Policy) { b.policy = p }

// backoff is the wait before the retry that follows attempt n (1-based).
func (p Policy) backoff(attempt int) time.Duration {
	if p.RetryBackoff <= 0 {
		return 0
	}
	d := p.RetryBackoff << min(attempt-1, 20)
	if p.RetryBackoffMax > 0 && d > p.RetryBackoffMax {
		d = p.RetryBackoffMax
	}
	return d
}

// Held is a job a worker is running.
type Held struct{ JobID, WorkerID string }

// RenewLeases extends the leases of running jobs; it returns how many were still held.
func (b *Broker) RenewLeases(ctx context.Context, held []Held) (int, error) {
	if b.policy.Lease <= 0 || len(held) == 0 {
		return 0, nil
	}
	args := []any{b.policy.Lease.Milliseconds()}
	for _, h := range held {
		args = append(args, h.JobID, h.WorkerID)
	}
	n, err := renewScript.Run(ctx, b.rdb, nil, args...).Int()
	if err != nil {
		return 0, fmt.Errorf("renew leases: %w", err)
	}
	return n, nil
}

// MaxLeaseExpiries is how many machines may die running one job before it fails for good.
const MaxLeaseExpiries = 5

// Reap returns jobs with expired leases to the queue. Any machine may call it; a lock in Redis
// lets one at a time do the work (the others return 0 at once).
func (b *Broker) Reap(ctx context.Context) (requeued, failed int, err error) {
	var tok [8]byte
	_, _ = rand.Read(tok[:])
	token := hex.EncodeToString(tok[:])
	ok, err := b.rdb.SetNX(ctx, keyReaperLock, token, 5*time.Second).Result()
	if err != nil {
		return 0, 0, fmt.Errorf("reaper lock: %w", err)
	}
	if !ok {
		return 0, 0, nil
	}
	defer unlockScript.Run(context.WithoutCancel(ctx), b.rdb, []string{keyReaperLock}, token)
	reason := fmt.Sprintf("the machines running this job died %d times; it may be what kills them, so it is not run again", MaxLeaseExpiries)
	res, err := reapScript.Run(ctx, b.rdb, nil, 100, MaxLeaseExpiries, ISO(b.now()), "", reason).Int64Slice()
	if err != nil || len(res) != 2 {
		return 0, 0, fmt.Errorf("reap expired leases: %v", err)
	}
	return int(res[0]), int(res[1]), nil
}
