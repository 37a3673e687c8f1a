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

// maxForget bounds the ids one claim carries to forget; past it the claim forgets everything.
const maxForget = 500

// memory is what this process's claims must tell the claim script to forget, per capability
// fingerprint: the ids written again since that set's last claim (job_submitted: the API
// wrote the job, job_requeued: a worker put it back), whose non-matches may be wrong now; or
// everything, when those messages may have been missed (a new fingerprint, a lost
// subscription, a failed claim). It is safe for concurrent use.
type memory struct {
	mu  sync.Mutex
	ids map[string][]string // fingerprint -> ids to forget
	all map[string]bool     // fingerprint -> forget everything
}

func newMemory() *memory {
	return &memory{ids: map[string][]string{}, all: map[string]bool{}}
}

// submitted records that job id was written to jobs:pending again.
func (m *memory) submitted(id string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for fp := range m.all {
		if m.all[fp] {
			continue
		}
		if len(m.ids[fp]) >= maxForget {
			m.all[fp], m.ids[fp] = true, nil
			continue
		}
		m.ids[fp] = append(m.ids[fp], id)
	}
}

// missed records that job_submitted messages may have been lost.
func (m *memory) missed() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for fp := range m.all {
		m.all[fp], m.ids[fp] = true, nil
	}
}

// take returns what a claim with fingerprint fp must forget, and starts tracking fp: a
// fingerprint seen for the first time forgets everything, since nobody here was listening
// for it before.
func (m *memory) take(fp string) (ids []string, all bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	all, known := m.all[fp]
	if !known {
		all = true
	}
	ids = m.ids[fp]
	m.all[fp], m.ids[fp] = false, nil
	return ids, all
}

// lost puts back what a failed claim was to forget (as everything: simpler, and rare).
func (m *memory) lost(fp string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.all[fp], m.ids[fp] = true, nil
}

// forgetArgs are the claim script's ARGV[9..]: forget everything, or these ids.
func forgetArgs(ids []string, all bool) []any {
	if all {
		return []any{"1"}
	}
	args := []any{"0"}
	for _, id := range ids {
		args = append(args, id)
	}
	return args
}
