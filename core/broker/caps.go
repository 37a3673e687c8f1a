package broker

import (
	"encoding/json"
	"fmt"
)

// Capabilities is what a worker slot advertises when it claims (PROTOCOL §2, emp-reference §2.6).
// Absent fields are omitted, never null: the claim script runs under cjson, where null is a
// truthy value that would silently break matching.
type Capabilities struct {
	WorkerID              string              `json:"worker_id"`
	MachineID             string              `json:"machine_id,omitempty"`
	Services              []string            `json:"services"`
	JobServiceRequiredMap []string            `json:"job_service_required_map"`
	Hardware              Hardware            `json:"hardware"`
	Models                map[string][]string `json:"models,omitempty"`
	CustomerAccess        CustomerAccess      `json:"customer_access"`
	Performance           Performance         `json:"performance"`
	Pool                  string              `json:"pool,omitempty"`
	WorkflowID            string              `json:"workflow_id,omitempty"`
	// Custom holds operator-declared capabilities, merged at the top level. They never replace
	// a field above.
	Custom map[string]any `json:"-"`
}

// Hardware is the hardware a slot offers.
type Hardware struct {
	GPUCount    int     `json:"gpu_count"`
	GPUMemoryGB float64 `json:"gpu_memory_gb"`
	GPUModel    string  `json:"gpu_model,omitempty"`
	RAMGB       float64 `json:"ram_gb"`
	CPUCores    int     `json:"cpu_cores"`
}

// CustomerAccess is a slot's customer isolation policy.
type CustomerAccess struct {
	Isolation        string   `json:"isolation"`
	AllowedCustomers []string `json:"allowed_customers,omitempty"`
	DeniedCustomers  []string `json:"denied_customers,omitempty"`
}

// Performance says how many jobs a slot runs at once.
type Performance struct {
	ConcurrentJobs int `json:"concurrent_jobs"`
}

// Encode returns the JSON sent to the claim script.
func (c Capabilities) Encode() ([]byte, error) {
	if c.WorkerID == "" {
		return nil, fmt.Errorf("capabilities: worker_id is required")
	}
	if c.Services == nil {
		c.Services = []string{}
	}
	if c.JobServiceRequiredMap == nil {
		c.JobServiceRequiredMap = c.Services
	}
	type plain Capabilities
	base, err := json.Marshal(plain(c))
	if err != nil {
		return nil, fmt.Errorf("capabilities: %w", err)
	}
	if len(c.Custom) == 0 {
		return base, nil
	}
	var merged map[string]any
	if err := json.Unmarshal(base, &merged); err != nil {
		return nil, fmt.Errorf("capabilities: %w", err)
	}
	for k, v := range c.Custom {
		if _, taken := merged[k]; taken || v == nil {
			continue
		}
		merged[k] = dropNulls(v)
	}
	return json.Marshal(merged)
}

// dropNulls removes null members of objects, so no null reaches cjson.
func dropNulls(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			if x != nil {
				out[k] = dropNulls(x)
			}
		}
		return out
	case []any:
		out := make([]any, 0, len(t))
		for _, x := range t {
			if x != nil {
				out = append(out, dropNulls(x))
			}
		}
		return out
	}
	return v
}
