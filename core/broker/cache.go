package broker

import (
	"context"
	"fmt"
)

// KeyServiceCache caches each pending job's service_required for the claim script (ours,
// additive; see claim.lua).
const KeyServiceCache = "jobs:pending:service"

// PruneServiceCache removes cache entries of jobs that left jobs:pending without our claim
// script (cancelled by the API, claimed by an old worker). Any machine may run it at any time.
func (b *Broker) PruneServiceCache(ctx context.Context) (int, error) {
	var cursor uint64
	removed := 0
	for {
		fields, next, err := b.rdb.HScan(ctx, KeyServiceCache, cursor, "*", 1000).Result()
		if err != nil {
			return removed, fmt.Errorf("prune service cache: %w", err)
		}
		var ids []string
		for i := 0; i < len(fields); i += 2 {
			ids = append(ids, fields[i])
		}
		if len(ids) > 0 {
			args := []any{"ZMSCORE", KeyPending}
			for _, id := range ids {
				args = append(args, id)
			}
			scores, err := b.rdb.Do(ctx, args...).Slice()
			if err != nil {
				return removed, fmt.Errorf("prune service cache: %w", err)
			}
			var gone []string
			for i, s := range scores {
				if s == nil {
					gone = append(gone, ids[i])
				}
			}
			if len(gone) > 0 {
				if err := b.rdb.HDel(ctx, KeyServiceCache, gone...).Err(); err != nil {
					return removed, fmt.Errorf("prune service cache: %w", err)
				}
				removed += len(gone)
			}
		}
		if cursor = next; cursor == 0 {
			return removed, nil
		}
	}
}

var pendingCountScript = script("pending_count")

// PendingFor counts pending jobs for the given services among the first limit jobs of
// jobs:pending; complete is false when the queue is longer than that.
func (b *Broker) PendingFor(ctx context.Context, services []string, limit int) (count int64, complete bool, err error) {
	args := []any{limit}
	for _, s := range services {
		args = append(args, s)
	}
	res, err := pendingCountScript.Run(ctx, b.rdb, nil, args...).Int64Slice()
	if err != nil || len(res) != 2 {
		return 0, false, fmt.Errorf("count pending jobs: %v", err)
	}
	return res[0], res[1] == 1, nil
}
