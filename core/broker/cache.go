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
