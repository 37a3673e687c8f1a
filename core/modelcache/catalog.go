package modelcache

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
)

// Model is one catalogue entry: where a model comes from, how big it is, its checksum, and
// the subdirectory of the cache (ComfyUI's models/<kind>) it lives in.
type Model struct {
	Name   string `json:"name"`   // what jobs call it: the ckpt_name, lora_name… value, or an API model
	URL    string `json:"url"`    // http(s)
	Size   int64  `json:"size"`   // bytes; reserved in the budget before the download starts
	SHA256 string `json:"sha256"` // required: every model is checked before it is used
	Kind   string `json:"kind"`   // checkpoints, loras, vae, unet, clip, controlnet, upscale_models…
	Pinned bool   `json:"pinned,omitempty"`
}

// Catalog maps model names to their entries.
type Catalog map[string]Model

var (
	safeName  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9 ._+()-]*$`)
	safeKind  = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
	sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// LoadCatalog reads a catalogue file (MACHINE_MODEL_CATALOG): {"models":[{…}]}. Every problem
// is reported at once.
func LoadCatalog(path string) (Catalog, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the model catalogue (MACHINE_MODEL_CATALOG): %w", err)
	}
	var doc struct {
		Models []Model `json:"models"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("model catalogue %s is not valid JSON (%v); see the README for its format", path, err)
	}
	c, err := NewCatalog(doc.Models)
	if err != nil {
		return nil, fmt.Errorf("model catalogue %s: %w", path, err)
	}
	return c, nil
}

// NewCatalog checks entries and indexes them by name.
func NewCatalog(models []Model) (Catalog, error) {
	c := Catalog{}
	var problems []string
	for i, m := range models {
		m.SHA256 = strings.ToLower(strings.TrimSpace(m.SHA256))
		switch {
		case !safeName.MatchString(m.Name) || strings.Contains(m.Name, ".."):
			problems = append(problems, fmt.Sprintf("model %d: name %q must be a plain file name", i+1, m.Name))
		case !strings.HasPrefix(m.URL, "http://") && !strings.HasPrefix(m.URL, "https://"):
			problems = append(problems, fmt.Sprintf("model %s: url %q must be http(s)", m.Name, m.URL))
		case m.Size <= 0:
			problems = append(problems, fmt.Sprintf("model %s: size must be its size in bytes", m.Name))
		case !sha256Hex.MatchString(m.SHA256):
			problems = append(problems, fmt.Sprintf("model %s: sha256 %q is not 64 hex digits", m.Name, m.SHA256))
		case !safeKind.MatchString(m.Kind):
			problems = append(problems, fmt.Sprintf("model %s: kind %q must be a subdirectory name such as checkpoints or loras", m.Name, m.Kind))
		case c[m.Name].Name != "":
			problems = append(problems, fmt.Sprintf("model %s is listed twice", m.Name))
		default:
			c[m.Name] = m
		}
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	return c, nil
}
