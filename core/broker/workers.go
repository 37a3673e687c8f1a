package broker

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/redis/go-redis/v9"
)

func redisZ(score float64, member string) redis.Z { return redis.Z{Score: score, Member: member} }

// Worker is a slot as registered in worker:{id}.
type Worker struct {
	ID           string
	MachineID    string
	Capabilities []byte
}

// Register writes a slot's worker hash and first heartbeat (emp-reference §3.1), so readers of
// worker:{id} see it idle before it claims anything.
func (b *Broker) Register(ctx context.Context, workers []Worker) error {
	now := ISO(b.now())
	pipe := b.rdb.Pipeline()
	for _, w := range workers {
		pipe.HSet(ctx, WorkerKey(w.ID), map[string]any{
			"worker_id": w.ID, "machine_id": w.MachineID, "capabilities": string(w.Capabilities),
			"status": "idle", "current_job_id": "", "connected_at": now, "last_heartbeat": now,
			"last_status_change": now,
		})
		pipe.SetEx(ctx, HeartbeatKey(w.ID), now, heartbeatTTL)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("register workers: %w", err)
	}
	return nil
}

// Heartbeat refreshes every slot's liveness (PROTOCOL §4): last_heartbeat and a 60 s key.
func (b *Broker) Heartbeat(ctx context.Context, workerIDs []string) error {
	now := ISO(b.now())
	pipe := b.rdb.Pipeline()
	for _, id := range workerIDs {
		pipe.HSet(ctx, WorkerKey(id), "last_heartbeat", now)
		pipe.SetEx(ctx, HeartbeatKey(id), now, heartbeatTTL)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	return nil
}

// Deregister removes the slots' worker records on a clean stop (emp-reference §3.4) and
// publishes them offline.
func (b *Broker) Deregister(ctx context.Context, workerIDs []string) error {
	now := b.now()
	pipe := b.rdb.Pipeline()
	for _, id := range workerIDs {
		msg, _ := json.Marshal(map[string]any{
			"worker_id": id, "old_status": "idle", "new_status": "offline", "current_job_id": "", "timestamp": now.UnixMilli(),
		})
		pipe.Publish(ctx, ChanWorker, msg)
		pipe.Del(ctx, WorkerKey(id), HeartbeatKey(id))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("deregister workers: %w", err)
	}
	return nil
}

// PublishMachineStatus publishes the machine:status:{id} message for the monitor (PROTOCOL §5).
func (b *Broker) PublishMachineStatus(ctx context.Context, machineID string, msg []byte) error {
	if err := b.rdb.Publish(ctx, MachineStatusChannel(machineID), msg).Err(); err != nil {
		return fmt.Errorf("publish machine status: %w", err)
	}
	return nil
}

// MaxmemoryPolicy reads the broker's eviction policy (an error where CONFIG is not allowed).
func (b *Broker) MaxmemoryPolicy(ctx context.Context) (string, error) {
	res, err := b.rdb.ConfigGet(ctx, "maxmemory-policy").Result()
	if err != nil {
		return "", fmt.Errorf("read maxmemory-policy: %w", err)
	}
	return res["maxmemory-policy"], nil
}
