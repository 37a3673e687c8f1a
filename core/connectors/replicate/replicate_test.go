package replicate_test

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emp-job-queue/machine/core/assets"
	"github.com/emp-job-queue/machine/core/connectors/replicate"
	"github.com/emp-job-queue/machine/core/job"
	"github.com/emp-job-queue/machine/core/netguard"
	"github.com/emp-job-queue/machine/internal/fakejobapis"
)

// loopback lets output downloads reach the fake on 127.0.0.1, as an operator's allow-list would.
var loopback = netguard.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}

func setup(t testing.TB, token string) (*fakejobapis.Jobs, *replicate.Connector, string) {
	return setupWith(t, token, loopback)
}

func setupWith(t testing.TB, token string, downloads netguard.Policy) (*fakejobapis.Jobs, *replicate.Connector, string) {
	fake := fakejobapis.New("r8_secret_token_value")
	srv := httptest.NewServer(fake.Handler())
	t.Cleanup(srv.Close)
	fake.SetBase(srv.URL)
	dir := t.TempDir()
	return fake, replicate.New(replicate.Settings{BaseURL: srv.URL + "/replicate/v1", Token: token, PollEvery: 5 * time.Millisecond,
		RatePerSec: 1000, Assets: assets.Store{Dir: dir}, Downloads: downloads}), dir
}

func run(c *replicate.Connector, ctx context.Context, payload string) (job.Result, error) {
	return c.Run(ctx, &job.Job{ID: "j9", Service: "replicate", Payload: json.RawMessage(payload)}, func(job.Progress) {})
}

func TestPredictionByModelSavesOutputs(t *testing.T) {
	fake, c, dir := setup(t, "r8_secret_token_value")
	res, err := run(c, context.Background(), `{"model":"black-forest-labs/flux-schnell","input":{"prompt":"a fox"}}`)
	if err != nil {
		t.Fatal(err)
	}
	d := res.Data.(map[string]any)
	if !strings.HasPrefix(d["image_url"].(string), "file://") || d["mime_type"] != "image/png" || len(res.OutputFiles) != 2 {
		t.Errorf("result = %+v", res)
	}
	if b, err := os.ReadFile(dir + "/j9.png"); err != nil || !strings.HasPrefix(string(b), "\x89PNG") {
		t.Errorf("saved output: %q %v", b, err)
	}
	if in := fake.Inputs[0]["input"].(map[string]any); in["prompt"] != "a fox" {
		t.Errorf("sent %v", fake.Inputs[0])
	}
}

func TestFailedPrediction(t *testing.T) {
	fake, c, _ := setup(t, "r8_secret_token_value")
	fake.Fail = true
	_, err := run(c, context.Background(), `{"version":"abc123","input":{}}`)
	if err == nil || !strings.Contains(err.Error(), "out of memory") {
		t.Fatalf("err = %v", err)
	}
}

func TestCancelCancelsThePrediction(t *testing.T) {
	fake, c, _ := setup(t, "r8_secret_token_value")
	fake.Slow = true
	ctx, cancel := context.WithCancel(context.Background())
	go func() { // cancel once the remote job exists and is being followed
		for fake.Polls() == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	if _, err := run(c, ctx, `{"version":"abc123","input":{}}`); err == nil {
		t.Fatal("a cancelled job succeeded")
	}
	if ids := fake.CancelledIDs(); len(ids) != 1 {
		t.Errorf("cancel requests: %v", ids)
	}
}

func TestBadTokenIsPermanentAndHidden(t *testing.T) {
	_, c, _ := setup(t, "r8_wrong_token_value")
	_, err := run(c, context.Background(), `{"version":"abc123","input":{}}`)
	if !job.IsPermanent(err) || strings.Contains(err.Error(), "r8_wrong_token_value") {
		t.Fatalf("err = %v", err)
	}
}

func TestNeitherVersionNorModel(t *testing.T) {
	_, c, _ := setup(t, "r8_secret_token_value")
	if _, err := run(c, context.Background(), `{"input":{}}`); !job.IsPermanent(err) {
		t.Fatalf("err = %v", err)
	}
}

// Output URLs come from the API's answer (or a job steering the model): without an
// allow-list they reach only public addresses, checked on the address actually connected
// to and on every redirect, and a refusal fails the job for good, with one clear sentence.
func TestOutputURLsReachOnlyPublicAddresses(t *testing.T) {
	var hits atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.2:0") // a host the narrow allow-list below names
	if err != nil {
		t.Fatal(err)
	}
	fake, _, _ := setupWith(t, "r8_secret_token_value", netguard.Policy{})
	inner := httptest.NewServer(fake.Handler()) // the machine's own loopback, holding "secrets"
	defer inner.Close()
	bouncer := &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Redirect(w, r, inner.URL+"/files/secret.png", http.StatusFound)
	})}}
	bouncer.Start()
	defer bouncer.Close()
	port := strings.TrimPrefix(inner.URL, "http://127.0.0.1:")

	for _, tc := range []struct {
		name, url, want string
		policy          netguard.Policy
	}{
		{"loopback", inner.URL + "/files/x.png", "is a loopback address", netguard.Policy{}},
		{"metadata", "http://169.254.169.254/latest/meta-data/iam/security-credentials/", "link-local", netguard.Policy{}},
		{"a name resolving to loopback", "http://localhost:" + port + "/files/x.png", "(localhost:" + port + ") is closed to jobs", netguard.Policy{}},
		{"an allowed host redirecting to loopback", bouncer.URL + "/out.png", "127.0.0.1:" + port + " is closed to jobs",
			netguard.Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fake, c, dir := setupWith(t, "r8_secret_token_value", tc.policy)
			fake.OutputURLs = []string{tc.url}
			_, err := run(c, context.Background(), `{"version":"abc123","input":{}}`)
			if !job.IsPermanent(err) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "MACHINE_ALLOW_PRIVATE_NETWORKS") {
				t.Fatalf("err = %v; want a permanent refusal saying %q", err, tc.want)
			}
			if testing.Verbose() {
				t.Log(err)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("something was saved: %v", entries)
			}
		})
	}
	if n := hits.Load(); n != 1 {
		t.Errorf("the redirecting URL was fetched %d times; a refusal is not retried", n)
	}
}
