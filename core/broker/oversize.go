package broker

import (
	"encoding/json"
	"fmt"

	"github.com/emp-job-queue/machine/core/job"
)

// oversize is a claimed job too large to run: only its small fields are decoded (the payload
// is skipped, not copied), and the job carries the permanent failure the slot records.
func oversize(raw string, limit int) (*job.Job, error) {
	var claimed struct {
		JobID string `json:"jobId"`
		Job   struct {
			ID         string `json:"id"`
			Service    string `json:"service_required"`
			CustomerID string `json:"customer_id"`
			RetryCount string `json:"retry_count"`
			MaxRetries string `json:"max_retries"`
			WorkflowID string `json:"workflow_id"`
		} `json:"job"`
	}
	if err := json.Unmarshal([]byte(raw), &claimed); err != nil {
		return nil, fmt.Errorf("claim: decode claimed job: %w", err)
	}
	h := claimed.Job
	if h.ID == "" {
		h.ID = claimed.JobID
	}
	j := job.FromHash(map[string]string{"id": h.ID, "service_required": h.Service, "customer_id": h.CustomerID,
		"retry_count": h.RetryCount, "max_retries": h.MaxRetries, "workflow_id": h.WorkflowID})
	j.Refused = job.Permanent(fmt.Errorf("job %s is %.1f MiB, more than this machine takes (MACHINE_MAX_JOB_MB=%d); send large inputs as URLs, not inline",
		h.ID, float64(len(raw))/(1<<20), limit>>20))
	return j, nil
}
