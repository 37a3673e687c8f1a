package installers_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/installers"
)

// A model without a sha256 is refused unless MACHINE_ALLOW_UNVERIFIED_DOWNLOADS is set, and then
// only over https, redirects included: nothing else would tell a swapped file from the real one.
// With a sha256, plain http is fine (the checksum protects the content).
func TestUnverifiedDownloadsNeedTheSettingAndHTTPS(t *testing.T) {
	data, sum := payload()
	plain := &modelServer{data: data}
	httpSrv := httptest.NewServer(plain)
	defer httpSrv.Close()
	secure := &modelServer{data: data}
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, httpSrv.URL+"/model.safetensors", http.StatusFound)
			return
		}
		secure.ServeHTTP(w, r)
	}))
	defer tlsSrv.Close()

	cases := []struct {
		name       string
		allow      bool
		url, sum   string
		errSays    string // empty: the download works
		plainCalls int32
	}{
		{"no sha256, not allowed", false, httpSrv.URL + "/model.safetensors", "", "MACHINE_ALLOW_UNVERIFIED_DOWNLOADS", 0},
		{"no sha256, not allowed, https", false, tlsSrv.URL + "/model.safetensors", "", "MACHINE_ALLOW_UNVERIFIED_DOWNLOADS", 0},
		{"no sha256, allowed, http", true, httpSrv.URL + "/model.safetensors", "", "https only", 0},
		{"no sha256, allowed, https redirected to http", true, tlsSrv.URL + "/redirect", "", "redirected away from https", 0},
		{"no sha256, allowed, https", true, tlsSrv.URL + "/model.safetensors", "", "", 0},
		{"sha256 over http", false, httpSrv.URL + "/model.safetensors", sum, "", 1},
		{"not http at all", true, "file:///etc/passwd", "", "not an http(s) URL", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			plain.requests.Store(0)
			dir := t.TempDir()
			d := &installers.Downloader{Cache: filepath.Join(dir, "cache"), Client: tlsSrv.Client(), AllowUnverified: c.allow}
			dest := filepath.Join(dir, "model.safetensors")
			err := d.Fetch(context.Background(), c.url, c.sum, dest, nil)
			if c.errSays == "" {
				if err != nil {
					t.Fatal(err)
				}
				if b, _ := os.ReadFile(dest); len(b) != len(data) {
					t.Errorf("dest holds %d bytes", len(b))
				}
			} else {
				if err == nil || !strings.Contains(err.Error(), c.errSays) {
					t.Fatalf("err = %v; want it to say %q", err, c.errSays)
				}
				if _, err := os.Stat(dest); !os.IsNotExist(err) {
					t.Error("a refused download was put in place")
				}
			}
			if n := plain.requests.Load(); n != c.plainCalls {
				t.Errorf("the plain http server got %d requests, want %d", n, c.plainCalls)
			}
		})
	}
}

// Command runs a child with the stripped environment and cuts credentials out of its error.
func TestCommandStripsSecretsAndRedacts(t *testing.T) {
	t.Setenv("MACHINE_API_TOKEN", "machine-token-secret")
	t.Setenv("OPENAI_API_KEY", "sk-openai-secret")
	out := filepath.Join(t.TempDir(), "env")
	if err := installers.Command(context.Background(), "", []string{"EXTRA=1"}, "sh", "-c", "env > "+out); err != nil {
		t.Fatal(err)
	}
	env, _ := os.ReadFile(out)
	if strings.Contains(string(env), "secret") || !strings.Contains(string(env), "EXTRA=1") || !strings.Contains(string(env), "PATH=") {
		t.Errorf("child environment:\n%s", env)
	}
	err := installers.Command(context.Background(), "", nil, "sh", "-c",
		"echo fetching https://bob:hunter2-secret@git.example/x.git?x=1\\&access_token=tok-secret; exit 3", "https://bob:hunter2-secret@git.example/x.git")
	if err == nil || strings.Contains(err.Error(), "secret") || !strings.Contains(err.Error(), "https://xxxxx@git.example/x.git") {
		t.Errorf("err = %v", err)
	}
}

func TestRedact(t *testing.T) {
	cases := map[string]string{
		"https://user:pass@host/p":                        "https://xxxxx@host/p",
		"clone 'https://tok@github.com/o/r.git' failed":   "clone 'https://xxxxx@github.com/o/r.git' failed",
		"https://hf.co/m?download=true&token=hf_abc":      "https://hf.co/m?download=true&token=xxxxx",
		"https://b.s3/k?X-Amz-Signature=abc&X-Amz-Date=1": "https://b.s3/k?X-Amz-Signature=xxxxx&X-Amz-Date=1",
		"https://civitai.com/api/download/1?api_key=k":    "https://civitai.com/api/download/1?api_key=xxxxx",
		"https://plain.example/path?page=2":               "https://plain.example/path?page=2",
		"git@github.com:o/r.git":                          "git@github.com:o/r.git",
	}
	for in, want := range cases {
		if got := installers.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}
