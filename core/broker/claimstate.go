package broker

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Keys the claim script keeps (ours, additive; see claim.lua).
const (
	// KeyQuarantine holds the pending entries the claim script could not read and took out of
	// jobs:pending: id -> {"reason", "quarantined_at", "job_failed"}.
	KeyQuarantine = "jobs:quarantine"
	// NoMatchPrefix starts the keys that remember, per capability set, the pending jobs that
	// set does not match (id -> the job's score when it was read). They expire within a minute.
	NoMatchPrefix = "jobs:nomatch:"
)

// ErrScript marks an error raised inside Redis by a broker script, or by a command it ran (a
// key of the wrong type, a Lua error): the broker answered, and the same call will fail the
// same way until the data or the script changes. Connection errors and a busy or loading
// server do not wrap it.
var ErrScript = errors.New("a broker script failed inside Redis")

// serverStates are error replies that say the server cannot run the call now, not that the
// script is wrong.
var serverStates = []string{"LOADING", "BUSY", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN",
	"NOREPLICAS", "OOM", "NOAUTH", "WRONGPASS", "NOPERM"}

// classify wraps a script's error with the operation, and with ErrScript when Redis raised it.
func classify(op string, err error) error {
	var reply redis.Error
	if !errors.As(err, &reply) {
		return fmt.Errorf("%s: %w", op, err)
	}
	for _, p := range serverStates {
		if redis.HasErrorPrefix(err, p) {
			return fmt.Errorf("%s: %w", op, err)
		}
	}
	return fmt.Errorf("%s: %w: %w", op, ErrScript, err)
}

// personalCaps are the capabilities that differ between slots of one kind. Fingerprint leaves
// them out, and claim.lua never remembers a non-match that read them (its PERSONAL table).
var personalCaps = []string{"worker_id", "machine_id"}

// Fingerprint names a capability set (encoded capabilities) for the claim script's memory of
// non-matches: a hash of everything but worker_id and machine_id, so that a machine's slots of
// one connector, and identical machines, share one memory, and any other change starts a new one.
func Fingerprint(caps []byte) string {
	var fields map[string]json.RawMessage
	canonical := caps
	if json.Unmarshal(caps, &fields) == nil {
		for _, k := range personalCaps {
			delete(fields, k)
		}
		if b, err := json.Marshal(fields); err == nil { // keys sorted
			canonical = b
		}
	}
	sum := sha256.Sum256(canonical)
	return hex.EncodeToString(sum[:16])
}

// fingerprintCache spares each claim a JSON decode: a process holds a handful of capability
// sets, one per connector and change.
var fingerprintCache = struct {
	sync.Mutex
	m map[string]string
}{m: map[string]string{}}

func fingerprintOf(caps []byte) string {
	c := &fingerprintCache
	c.Lock()
	defer c.Unlock()
	if fp, ok := c.m[string(caps)]; ok {
		return fp
	}
	if len(c.m) >= 1024 {
		clear(c.m)
	}
	fp := Fingerprint(caps)
	c.m[string(caps)] = fp
	return fp
}
