package remote

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/emp-job-queue/machine/core/job"
)

// Cutting a secret out of an error keeps what callers test for.
func TestRedactionKeepsTheErrorChain(t *testing.T) {
	const secret = "sk-live-0123456789"
	c := New(Options{Name: "API", Secrets: []string{secret}})
	err := c.redact(fmt.Errorf("calling with %s: %w", secret, ErrUnavailable))
	if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), secret[:len(secret)/2]) {
		t.Errorf("the secret is still in %q", err)
	}
	if !errors.Is(err, ErrUnavailable) {
		t.Errorf("errors.Is(%q, ErrUnavailable) = false after redaction", err)
	}
	if perm := c.redact(job.Permanent(fmt.Errorf("key %s refused", secret))); !job.IsPermanent(perm) || strings.Contains(perm.Error(), secret) {
		t.Errorf("a permanent error after redaction: %q permanent=%v", perm, job.IsPermanent(perm))
	}
}
