package assets

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"mime"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/emp-job-queue/machine/core/job"
)

// Saver stores one output of a job; ctx bounds the upload (a cancelled or drained job stops it).
type Saver interface {
	Save(ctx context.Context, jobID string, jobCtx json.RawMessage, ext string, data []byte) (Saved, error)
}

// uploadTimeout bounds one upload, within the job's own deadline.
const uploadTimeout = 2 * time.Minute

// S3Config reaches an S3-compatible storage (AWS S3, MinIO, R2, Spaces…). The secret is never
// logged or shown.
type S3Config struct {
	Endpoint  string // host[:port]
	AccessKey string
	SecretKey string
	Region    string
	Secure    bool
	Bucket    string // used when the job's ctx.storage names none
}

// Router saves to the storage a job's ctx.storage names, as the old asset saver did:
// ctx.storage.provider s3-like goes to the S3-compatible storage (ctx.storage.bucket, public
// URL from ctx.storage.cdnUrl); no provider, or "local", goes to the local store.
type Router struct {
	Local Store
	S3    *minio.Client // nil: no S3 storage configured
	cfg   S3Config
}

// NewRouter returns a router; S3 is set up only when an endpoint is configured.
func NewRouter(local Store, s3 S3Config) (*Router, error) {
	r := &Router{Local: local, cfg: s3}
	if s3.Endpoint == "" {
		return r, nil
	}
	c, err := minio.New(s3.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(s3.AccessKey, s3.SecretKey, ""),
		Secure: s3.Secure, Region: s3.Region})
	if err != nil {
		return nil, fmt.Errorf("S3_ENDPOINT %q is not usable: %w", s3.Endpoint, err)
	}
	r.S3 = c
	return r, nil
}

var s3Providers = map[string]bool{"s3": true, "aws": true, "minio": true, "r2": true, "spaces": true, "wasabi": true, "b2": true}

type storageCtx struct {
	Prefix   string `json:"prefix"`
	Filename string `json:"filename"`
	Storage  struct {
		Provider string `json:"provider"`
		Bucket   string `json:"bucket"`
		CDNURL   string `json:"cdnUrl"`
	} `json:"storage"`
	// The old context also carried these at the top level.
	Provider string `json:"provider"`
	Bucket   string `json:"bucket"`
	CDNURL   string `json:"cdnUrl"`
}

// Save implements Saver.
func (r *Router) Save(ctx context.Context, jobID string, jobCtx json.RawMessage, ext string, data []byte) (Saved, error) {
	var c storageCtx
	_ = json.Unmarshal(jobCtx, &c)
	provider, bucket, cdn := first(c.Storage.Provider, c.Provider), first(c.Storage.Bucket, c.Bucket), first(c.Storage.CDNURL, c.CDNURL)
	switch p := strings.ToLower(provider); {
	case p == "" || p == "local":
		return r.Local.Save(ctx, jobID, jobCtx, ext, data)
	case !s3Providers[p]:
		return Saved{}, job.Permanent(fmt.Errorf("ctx.storage.provider %q is not supported by this machine; use an S3-compatible provider (s3, minio, r2, …) or local", provider))
	case r.S3 == nil:
		return Saved{}, job.Permanent(fmt.Errorf("the job asks for %s storage but this machine has no S3_ENDPOINT configured", provider))
	}
	if bucket == "" {
		bucket = r.cfg.Bucket
	}
	if bucket == "" {
		return Saved{}, job.Permanent(fmt.Errorf("the job names no ctx.storage.bucket and S3_BUCKET is unset"))
	}
	key, err := objectKey(jobID, c.Prefix, c.Filename, ext)
	if err != nil {
		return Saved{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, uploadTimeout)
	defer cancel()
	mt := mime.TypeByExtension(ext)
	if _, err := r.S3.PutObject(ctx, bucket, key, bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{ContentType: mt}); err != nil {
		return Saved{}, fmt.Errorf("upload %s to bucket %s: %w", key, bucket, err)
	}
	u := (&url.URL{Scheme: "https", Host: r.cfg.Endpoint, Path: "/" + bucket + "/" + key}).String()
	if !r.cfg.Secure {
		u = strings.Replace(u, "https://", "http://", 1)
	}
	if cdn != "" {
		u = "https://" + strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(cdn, "https://"), "http://"), "/") + "/" + key
	}
	return Saved{Path: "s3://" + bucket + "/" + key, URL: u, MimeType: mt, Size: int64(len(data))}, nil
}

func first(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// objectKey is prefix/(filename with the real extension, or <job id><ext>), made safe. A name
// that is empty, "." or ".." once cleaned is refused: it would name the directory itself or
// the one above it.
func objectKey(jobID, prefix, filename, ext string) (string, error) {
	name := jobID + ext
	if filename != "" {
		name = strings.TrimSuffix(path.Base(filename), path.Ext(filename)) + ext
	}
	name = unsafe.ReplaceAllString(name, "_")
	if name == "" || name == "." || name == ".." {
		return "", job.Permanent(fmt.Errorf("the job's output would be named %q (from ctx.filename %q or job id %q), which is not a file name; give ctx.filename a name such as out.png",
			name, filename, jobID))
	}
	var parts []string
	for _, p := range strings.Split(prefix, "/") {
		if p = unsafe.ReplaceAllString(p, "_"); p != "" && p != "." && p != ".." {
			parts = append(parts, p)
		}
	}
	return path.Join(append(parts, name)...), nil
}
