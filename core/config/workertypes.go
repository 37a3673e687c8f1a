package config

import (
	"path/filepath"
	"strings"
	"time"
)

// Ollama configures the ollama connector and the daemon the machine supervises for it.
type Ollama struct {
	BasePort     int           // OLLAMA_BASE_PORT (old alias OLLAMA_PORT): where the daemon listens
	Binary       string        // OLLAMA_BIN: the binary; empty: PATH and the usual places
	Install      string        // OLLAMA_INSTALL: "script" lets the machine run the official installer, "none" does not
	InstallURL   string        // OLLAMA_INSTALL_URL: the install script
	Models       []string      // OLLAMA_DEFAULT_MODELS: pulled at install
	DefaultModel string        // OLLAMA_DEFAULT_MODEL: for jobs that name none
	ModelsDir    string        // OLLAMA_MODELS (old OLLAMA_MODEL_STORAGE_PATH): where models live
	Timeout      time.Duration // OLLAMA_TIMEOUT_SECONDS: one request to the daemon
	PullTimeout  time.Duration // OLLAMA_MODEL_DOWNLOAD_TIMEOUT: one model's pull
	DaemonEnv    []string      // OLLAMA_KEEP_ALIVE, OLLAMA_MAX_LOADED_MODELS, … passed on to `ollama serve`
}

// Gemini configures the gemini connector (the gem-nano-banana service). The key is a secret.
type Gemini struct {
	APIKey     string        // GEMINI_API_KEY, or the content of GEMINI_API_KEY_FILE
	URL        string        // GEMINI_NANO_BANANA_URL: the model's generateContent endpoint
	Timeout    time.Duration // GEMINI_TIMEOUT: one request
	MaxRetries int           // GEMINI_MAX_RETRIES: retries of one request
	RatePerSec float64       // GEMINI_RATE_LIMIT: requests a second
}

// A1111 configures the a1111 connector and the AUTOMATIC1111 WebUI instances it runs on.
type A1111 struct {
	BasePort int           // A1111_BASE_PORT (old alias A1111_PORT): instance i listens on BasePort+i
	RepoURL  string        // A1111_REPO_URL
	Branch   string        // A1111_BRANCH: empty for the repository's default branch
	Commit   string        // A1111_COMMIT_HASH (or A1111_COMMIT): the pinned commit
	Dir      string        // A1111_DIR: the checkout
	Args     string        // A1111_ARGS: extra arguments of every instance
	CkptDir  string        // A1111_CKPT_DIR (old COMFYUI_CHECKPOINTS_PATH): --ckpt-dir of every instance
	Timeout  time.Duration // A1111_TIMEOUT_SECONDS: one generation request
}

// DefaultA1111Commit is the AUTOMATIC1111 commit the old runtime pinned.
const DefaultA1111Commit = "cf2772fab0af5573da775e7437e6acdca424f26e"

// ollamaDaemonVars are Ollama's own settings, passed on to the daemon when set.
var ollamaDaemonVars = []string{"OLLAMA_KEEP_ALIVE", "OLLAMA_MAX_LOADED_MODELS", "OLLAMA_NUM_PARALLEL", "OLLAMA_MAX_QUEUE",
	"OLLAMA_FLASH_ATTENTION", "OLLAMA_KV_CACHE_TYPE", "OLLAMA_CONTEXT_LENGTH", "OLLAMA_DEBUG"}

// workerTypes reads the settings of the ollama, gemini and a1111 connectors.
func (r *reader) workerTypes(c *Config) {
	c.Ollama = Ollama{
		BasePort:   r.intRange("OLLAMA_BASE_PORT", 11434, 1, 65535, "a TCP port such as 11434"),
		Binary:     r.str("OLLAMA_BIN", ""),
		Install:    strings.ToLower(r.str("OLLAMA_INSTALL", "none")),
		InstallURL: r.str("OLLAMA_INSTALL_URL", "https://ollama.com/install.sh"),
		Models:     r.list("OLLAMA_DEFAULT_MODELS"),
		ModelsDir:  r.str("OLLAMA_MODELS", filepath.Join(c.Workspace, "ollama", "models")),
		Timeout:    r.seconds("OLLAMA_TIMEOUT_SECONDS", 5*time.Minute, time.Second, 24*time.Hour, "a number of seconds such as 300"),
		PullTimeout: r.seconds("OLLAMA_MODEL_DOWNLOAD_TIMEOUT", 30*time.Minute, time.Second, 48*time.Hour,
			"a number of seconds such as 1800"),
	}
	if _, set := r.env("OLLAMA_DEFAULT_MODELS"); !set {
		c.Ollama.Models = []string{"llama3.2", "llama3.2:1b"} // the old runtime's default
	}
	c.Ollama.DefaultModel = r.str("OLLAMA_DEFAULT_MODEL", "llama3.2")
	for _, k := range ollamaDaemonVars {
		if v := r.str(k, ""); v != "" {
			c.Ollama.DaemonEnv = append(c.Ollama.DaemonEnv, k+"="+v)
		}
	}
	if c.Ollama.Install != "none" && c.Ollama.Install != "script" {
		r.problem("OLLAMA_INSTALL %q must be script (the machine may run Ollama's official install script) or none", c.Ollama.Install)
	}

	c.Gemini = Gemini{
		APIKey: r.secret("GEMINI_API_KEY"),
		URL: r.str("GEMINI_NANO_BANANA_URL",
			"https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash-image-preview:generateContent"),
		Timeout:    r.seconds("GEMINI_TIMEOUT", 45*time.Second, time.Second, time.Hour, "a number of seconds such as 45"),
		MaxRetries: r.intRange("GEMINI_MAX_RETRIES", 3, 0, 20, "a number of retries such as 3"),
		RatePerSec: r.float("GEMINI_RATE_LIMIT", 2, "requests a second, e.g. 2"),
	}
	// Whether gemini has its key is the gemini descriptor's Check (core/connectors/registry).

	c.A1111 = A1111{
		BasePort: r.intRange("A1111_BASE_PORT", 7860, 1, 65000, "a TCP port such as 7860"),
		RepoURL:  r.str("A1111_REPO_URL", "https://github.com/AUTOMATIC1111/stable-diffusion-webui.git"),
		Branch:   r.str("A1111_BRANCH", ""),
		Commit:   r.str("A1111_COMMIT_HASH", r.str("A1111_COMMIT", DefaultA1111Commit)),
		Dir:      r.str("A1111_DIR", filepath.Join(c.Workspace, "a1111")),
		Args:     r.str("A1111_ARGS", ""),
		CkptDir:  r.str("A1111_CKPT_DIR", ""),
		Timeout:  r.seconds("A1111_TIMEOUT_SECONDS", 10*time.Minute, time.Second, 24*time.Hour, "a number of seconds such as 600"),
	}
}
