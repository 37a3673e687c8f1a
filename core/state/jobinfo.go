package state

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/emp-job-queue/machine/core/job"
)

// JobInfo is what the console's describe view shows of a job beyond its progress: taken from
// the claimed job hash, with the payload reduced to a summary that never carries a secret.
type JobInfo struct {
	Customer     string
	Priority     string
	Requirements string // as submitted (JSON), cut to a readable length
	Workflow     string
	CreatedAt    string // as the API wrote it (ms since the epoch)
	Attempt      int    // 1 for the first attempt
	MaxRetries   int
	Payload      []Field // top-level payload fields, sorted by key
}

// Field is one summarized payload field.
type Field struct{ Key, Value string }

// ProgressPoint is one progress report of a running job.
type ProgressPoint struct {
	At      time.Time
	Percent float64
	Message string
}

const (
	maxSteps      = 64
	maxFieldChars = 80
	maxReqChars   = 200
)

// secretKey matches payload keys whose values are never shown.
var secretKey = regexp.MustCompile(`(?i)(secret|token|password|passwd|api[_-]?key|apikey|auth|credential|private|signature|cookie|session)`)

// InfoOf summarizes a claimed job for the console.
func InfoOf(j *job.Job) JobInfo {
	f := j.Fields
	info := JobInfo{Customer: j.CustomerID, Priority: f["priority"], Workflow: f["workflow_id"], CreatedAt: f["created_at"],
		Attempt: j.RetryCount + 1, MaxRetries: j.MaxRetries}
	if r := f["requirements"]; r != "" {
		info.Requirements = cutRunes(r, maxReqChars)
	}
	info.Payload = SummarizePayload(j.Payload)
	return info
}

// SummarizePayload lists a payload's top-level fields with short values: secrets by key are
// cut, long strings (prompts, base64 images) shortened, objects and arrays reduced to their
// shape. A payload that is not a JSON object is described in one field.
func SummarizePayload(raw json.RawMessage) []Field {
	if len(raw) == 0 {
		return nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return []Field{{Key: "(payload)", Value: fmt.Sprintf("not a JSON object (%d bytes)", len(raw))}}
	}
	out := make([]Field, 0, len(obj))
	for k, v := range obj {
		out = append(out, Field{Key: k, Value: summarizeValue(k, v)})
	}
	slices.SortFunc(out, func(a, b Field) int { return strings.Compare(a.Key, b.Key) })
	return out
}

func summarizeValue(key string, v json.RawMessage) string {
	if secretKey.MatchString(key) {
		return "‹cut: secret›"
	}
	var x any
	if err := json.Unmarshal(v, &x); err != nil {
		return "‹invalid›"
	}
	switch x := x.(type) {
	case string:
		if strings.HasPrefix(x, "data:") || (len(x) > 256 && !strings.ContainsAny(x, " \n")) {
			return fmt.Sprintf("‹%d bytes of data›", len(x))
		}
		return fmt.Sprintf("%q", cutRunes(x, maxFieldChars))
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		return cutRunes("{"+strings.Join(keys, ", ")+"}", maxFieldChars)
	case []any:
		return fmt.Sprintf("[%d items]", len(x))
	case nil:
		return "null"
	default:
		return cutRunes(string(v), maxFieldChars)
	}
}

func cutRunes(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// JobInfo records the describe-view summary of the job a slot just claimed.
func (s *Store) JobInfo(slotID string, info JobInfo) {
	s.update(event, func(snap *Snapshot) {
		if sl := s.slot(snap, slotID); sl != nil {
			sl.Info = info
		}
	})
}
