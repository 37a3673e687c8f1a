package assets_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/emp-job-queue/machine/core/assets"
	"github.com/emp-job-queue/machine/core/job"
)

func TestLocalStoreNamesFromCtx(t *testing.T) {
	s := assets.Store{Dir: t.TempDir(), BaseURL: "https://cdn.example.com/a"}
	saved, err := s.Save(context.Background(), "job-1", json.RawMessage(`{"prefix":"u/../wf 1","filename":"out.jpeg"}`), ".png", []byte("png"))
	if err != nil {
		t.Fatal(err)
	}
	if saved.URL != "https://cdn.example.com/a/u/wf_1/out.png" || saved.MimeType != "image/png" {
		t.Errorf("saved = %+v", saved)
	}
	if b, _ := os.ReadFile(saved.Path); string(b) != "png" || !strings.HasPrefix(saved.Path, s.Dir) {
		t.Errorf("file %s = %q", saved.Path, b)
	}
}

// S3-compatible storage, against an in-repo S3 server (gofakes3): the object lands in the
// bucket the job names, the URL uses its CDN.
func TestS3ByJobCtx(t *testing.T) {
	backend := s3mem.New()
	srv := httptest.NewServer(gofakes3.New(backend).Server())
	defer srv.Close()
	if err := backend.CreateBucket("assets"); err != nil {
		t.Fatal(err)
	}
	r, err := assets.NewRouter(assets.Store{Dir: t.TempDir()}, assets.S3Config{
		Endpoint: strings.TrimPrefix(srv.URL, "http://"), AccessKey: "ak", SecretKey: "sk", Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	jobCtx := json.RawMessage(`{"storage":{"provider":"s3","bucket":"assets","cdnUrl":"cdn.example.com"},"prefix":"emprops/wf-1"}`)
	saved, err := r.Save(context.Background(), "job-9", jobCtx, ".png", []byte("image bytes"))
	if err != nil {
		t.Fatal(err)
	}
	if saved.URL != "https://cdn.example.com/emprops/wf-1/job-9.png" {
		t.Errorf("url = %s", saved.URL)
	}
	obj, err := backend.GetObject("assets", "emprops/wf-1/job-9.png", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Contents.Close()
	if b, _ := io.ReadAll(obj.Contents); string(b) != "image bytes" {
		t.Errorf("object = %q", b)
	}
	// No provider: the local store.
	local, err := r.Save(context.Background(), "job-9", nil, ".png", []byte("x"))
	if err != nil || !strings.HasPrefix(local.URL, "file://") {
		t.Errorf("local = %+v %v", local, err)
	}
	// A provider this machine cannot serve is a permanent, clear failure.
	if _, err := r.Save(context.Background(), "j", json.RawMessage(`{"storage":{"provider":"azure","bucket":"b"}}`), ".png", nil); !job.IsPermanent(err) || !strings.Contains(err.Error(), "azure") {
		t.Errorf("azure: %v", err)
	}
}

func TestS3NotConfigured(t *testing.T) {
	r, _ := assets.NewRouter(assets.Store{Dir: t.TempDir()}, assets.S3Config{})
	_, err := r.Save(context.Background(), "j", json.RawMessage(`{"storage":{"provider":"s3","bucket":"b"}}`), ".png", nil)
	if !job.IsPermanent(err) || !strings.Contains(err.Error(), "S3_ENDPOINT") {
		t.Errorf("err = %v", err)
	}
}

// An upload ends with its job: a cancelled (or drained) job does not wait on a storage that
// does not answer.
func TestUploadsEndWithTheirJob(t *testing.T) {
	hold := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-hold }))
	defer srv.Close()
	defer close(hold)
	r, err := assets.NewRouter(assets.Store{Dir: t.TempDir()}, assets.S3Config{
		Endpoint: strings.TrimPrefix(srv.URL, "http://"), AccessKey: "ak", SecretKey: "sk", Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = r.Save(ctx, "job-1", json.RawMessage(`{"storage":{"provider":"s3","bucket":"assets"}}`), ".png", []byte("x"))
	if !errors.Is(err, context.Canceled) {
		t.Errorf("upload with a cancelled job: %v", err)
	}
}
