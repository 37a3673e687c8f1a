package broker

import (
	"regexp"
	"strings"
)

// FailureClass is the failure_type, failure_reason and failure_description of a failure
// attestation, as emp's worker classifies an error message
// (FailureClassifier.classify, apps/worker/src/types/failure-classification.ts). The monitor's
// forensics pages group failures by these strings.
type FailureClass struct {
	Type        string `json:"failure_type"`
	Reason      string `json:"failure_reason"`
	Description string `json:"failure_description"`
}

// ClassifyFailure ports emp's classifier: the same categories tried in the same order, on the
// lower-cased message. emp also passes an HTTP status and a timeout flag that only its
// asynchronous REST connectors set; ours put what matters in the message, so the message alone
// decides.
func ClassifyFailure(message string) FailureClass {
	e := strings.ToLower(message)
	switch {
	case has(e, "cannot generate", "unable to create", "can't generate", "cannot create", "policy violation",
		"content policy", "inappropriate", "not allowed", "refused", "declined", "safety", "harmful", "violence",
		"nsfw", "copyright", "intellectual property", "moderation_blocked", "safety system", "blocked", "adult content"):
		return refusal(e)
	case has(e, "authentication", "unauthorized", "api key", "token", "permission"):
		return first(e, "auth_error", "invalid_api_key", "Authentication failed",
			rule{[]string{"api key", "invalid key"}, "invalid_api_key", "Authentication failed due to invalid API key"},
			rule{[]string{"expired", "token"}, "expired_token", "Authentication failed due to expired token"},
			rule{[]string{"permission"}, "insufficient_permissions", "Authentication failed due to insufficient permissions"},
			rule{[]string{"suspended", "disabled"}, "account_suspended", "Authentication failed due to suspended account"})
	case has(e, "rate limit", "quota", "too many requests"):
		return first(e, "rate_limit", "requests_per_minute", "Rate limited due to requests per minute",
			rule{[]string{"daily", "quota"}, "daily_quota_exceeded", "Rate limited due to daily quota exceeded"},
			rule{[]string{"concurrent"}, "concurrent_requests", "Rate limited due to concurrent requests"},
			rule{[]string{"token"}, "tokens_per_minute", "Rate limited due to tokens per minute"})
	case has(e, "network", "connection", "dns", "ssl", "econnrefused", "enotfound", "timeout"):
		return first(e, "network_error", "connection_failed", "Network connection failed",
			rule{[]string{"dns", "enotfound"}, "dns_resolution", "Network error due to DNS resolution failure"},
			rule{[]string{"ssl", "certificate"}, "ssl_certificate", "Network error due to SSL certificate issues"},
			rule{[]string{"proxy"}, "proxy_error", "Network error due to proxy issues"},
			rule{[]string{"timeout"}, "network_timeout", "Network connection timed out"})
	case has(e, "memory", "disk space", "storage", "limit", "capacity"):
		if has(e, "memory") && has(e, "gpu", "cuda") {
			return FailureClass{"resource_limit", "gpu_memory_full", "Resource limit exceeded due to GPU memory"}
		}
		return first(e, "resource_limit", "out_of_memory", "Resource limit exceeded",
			rule{[]string{"memory"}, "out_of_memory", "Resource limit exceeded due to memory"},
			rule{[]string{"disk", "storage"}, "disk_space_full", "Resource limit exceeded due to disk space"},
			rule{[]string{"concurrent"}, "concurrent_limit", "Resource limit exceeded due to concurrent operations"})
	case has(e, "service", "server error", "maintenance", "unavailable"):
		return first(e, "service_error", "service_down", "Service is down or experiencing issues",
			rule{[]string{"maintenance"}, "maintenance_mode", "Service error due to maintenance mode"},
			rule{[]string{"unavailable"}, "service_unavailable", "Service temporarily unavailable"},
			rule{[]string{"degraded"}, "degraded_performance", "Service error due to degraded performance"})
	case has(e, "timeout", "timed out"):
		return first(e, "timeout", "job_timeout", "Job processing timed out",
			rule{[]string{"network"}, "network_timeout", "Operation timed out due to network issues"},
			rule{[]string{"processing"}, "processing_timeout", "Operation timed out during processing"},
			rule{[]string{"queue"}, "queue_timeout", "Operation timed out in queue"})
	case has(e, "validation", "invalid", "missing", "required", "format", "component", "model", "does not exist"):
		return validation(e)
	case has(e, "response", "content type", "corrupted", "expected"):
		return first(e, "response_error", "invalid_response_format", "Response error due to invalid format",
			rule{[]string{"content type"}, "unexpected_content_type", "Response error due to unexpected content type"},
			rule{[]string{"corrupted"}, "corrupted_data", "Response error due to corrupted data"},
			rule{[]string{"missing", "expected"}, "missing_expected_data", "Response error due to missing expected data"})
	case !has(e, "dns", "enotfound", "network", "timeout") && has(e, "cuda", "gpu", "internal", "config", "dependency"):
		return first(e, "system_error", "internal_error", "Internal system error",
			rule{[]string{"cuda", "gpu"}, "gpu_error", "System error due to GPU/CUDA issues"},
			rule{[]string{"config"}, "config_error", "System error due to configuration issues"},
			rule{[]string{"dependency"}, "dependency_error", "System error due to dependency issues"})
	}
	return FailureClass{"system_error", "unknown_error", "Unclassified error"}
}

// rule gives a reason when the message contains any of its words.
type rule struct {
	any         []string
	reason      string
	description string
}

// first applies the first rule that matches, else the category's default.
func first(e, typ, reason, description string, rules ...rule) FailureClass {
	for _, r := range rules {
		if has(e, r.any...) {
			return FailureClass{typ, r.reason, r.description}
		}
	}
	return FailureClass{typ, reason, description}
}

func has(e string, words ...string) bool {
	for _, w := range words {
		if strings.Contains(e, w) {
			return true
		}
	}
	return false
}

var requestID = regexp.MustCompile(`wfr_[a-zA-Z0-9]+`)

func refusal(e string) FailureClass {
	const typ = "generation_refusal"
	if has(e, "moderation_blocked", "safety system") {
		d := "Content refused by safety system"
		if id := requestID.FindString(e); id != "" {
			d += " (request ID: " + id + ")"
		}
		return FailureClass{typ, "safety_filter", d}
	}
	switch {
	case has(e, "violence", "violent"):
		return FailureClass{typ, "violence_detected", "Content refused due to violence detection"}
	case has(e, "copyright", "intellectual property"):
		return FailureClass{typ, "copyright_blocker", "Content refused due to copyright concerns"}
	case has(e, "nsfw", "explicit", "adult content") || (has(e, "blocked") && has(e, "adult")):
		return FailureClass{typ, "nsfw_content", "Content refused due to NSFW content"}
	}
	return first(e, typ, "policy_violation", "Content refused due to policy violation",
		rule{[]string{"hate", "discrimination"}, "hate_speech", "Content refused due to hate speech detection"},
		rule{[]string{"personal", "private"}, "personal_info", "Content refused due to personal information"})
}

var componentName = regexp.MustCompile(`component ['"]([^'"]+)['"]`)

func validation(e string) FailureClass {
	const typ = "validation_error"
	if has(e, "error in component") {
		name := "unknown"
		if m := componentName.FindStringSubmatch(e); m != nil {
			name = m[1]
		}
		return FailureClass{typ, "component_error", "Error in component " + name}
	}
	if has(e, "model") && has(e, "does not exist", "not found") {
		return FailureClass{typ, "model_not_found", "Model not found or does not exist"}
	}
	return first(e, typ, "invalid_payload", "Validation failed due to invalid payload",
		rule{[]string{"missing", "required"}, "missing_required_field", "Validation failed due to missing required field"},
		rule{[]string{"format"}, "invalid_format", "Validation failed due to invalid format"},
		rule{[]string{"unsupported"}, "unsupported_operation", "Validation failed due to unsupported operation"})
}
