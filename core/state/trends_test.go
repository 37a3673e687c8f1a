package state

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// Trends keep one value per sample, at most trendCap, and jobs/min is the rate over the last
// minute.
func TestTrendsFollowSamples(t *testing.T) {
	st := New("box", "", []Slot{{ID: "s0"}})
	at := time.Unix(1000, 0)
	for i := range 2*trendCap + 7 {
		st.JobClaimed("s0", "j", "svc")
		st.JobEnded("s0", "completed", "") // one job a second
		st.SetQueueDepth(int64(i))
		st.SetTelemetry(Telemetry{At: at.Add(time.Duration(i) * time.Second), Host: Host{CPUPercent: 5},
			Services: []ServiceLoad{{Name: "comfy", CPUPercent: 50, RSSMB: 1000}}})
	}
	tr := st.Snapshot().Trends.Window()
	if len(tr.QueueDepth) != trendCap || tr.QueueDepth[trendCap-1] != float64(2*trendCap+6) {
		t.Fatalf("queue depth trend: %d values, last %v", len(tr.QueueDepth), tr.QueueDepth[len(tr.QueueDepth)-1])
	}
	if tr.Step != time.Second {
		t.Errorf("step = %v", tr.Step)
	}
	if got := tr.JobsPerMin[len(tr.JobsPerMin)-1]; got != 60 {
		t.Errorf("jobs/min = %v, want 60", got)
	}
	if len(tr.ServiceCPU["comfy"]) != trendCap || tr.ServiceRSS["comfy"][0] != 1000 {
		t.Errorf("service trends: %d CPU values", len(tr.ServiceCPU["comfy"]))
	}
}

// The payload summary never carries a secret or a long blob.
func TestPayloadSummaryCutsSecrets(t *testing.T) {
	raw := json.RawMessage(`{"prompt":"a cat","api_key":"sk-live-123","auth":{"token":"x"},"image":"data:image/png;base64,AAAA",` +
		`"blob":"` + strings.Repeat("Q", 400) + `","n":3,"nested":{"b":1,"a":2},"list":[1,2]}`)
	var b strings.Builder
	for _, f := range SummarizePayload(raw) {
		b.WriteString(f.Key + "=" + f.Value + "\n")
	}
	got := b.String()
	for _, secret := range []string{"sk-live-123", "AAAA", strings.Repeat("Q", 50), `"x"`} {
		if strings.Contains(got, secret) {
			t.Errorf("summary shows %q:\n%s", secret, got)
		}
	}
	for _, want := range []string{`prompt="a cat"`, "api_key=‹cut: secret›", "n=3", "nested={a, b}", "list=[2 items]", "image=‹"} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
	if f := SummarizePayload(json.RawMessage(`[1]`)); len(f) != 1 || !strings.Contains(f[0].Value, "not a JSON object") {
		t.Errorf("non-object payload: %+v", f)
	}
}
