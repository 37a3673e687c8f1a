package comfyui

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// ModelKinds are the ComfyUI model folders the shared model cache serves, as subdirectories of
// its directory: <cache>/<kind>/<file>, the layout core/modelcache keeps. ComfyUI maps the
// legacy names unet and clip to diffusion_models and text_encoders itself.
var ModelKinds = []string{"checkpoints", "loras", "vae", "unet", "clip", "controlnet", "upscale_models"}

var kindName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)

// WriteExtraModelPaths writes path, an extra_model_paths.yaml that points ComfyUI at the shared
// model cache dir for ModelKinds and the given extra kinds (those of the model catalogue), so
// every GPU's instance reads the same files. It is written whole and renamed into place.
func WriteExtraModelPaths(path, dir string, extra []string) error {
	kinds := slices.Clone(ModelKinds)
	for _, k := range extra {
		if !kindName.MatchString(k) {
			return fmt.Errorf("model kind %q is not a plain subdirectory name (the model catalogue checks kinds)", k)
		}
		if !slices.Contains(kinds, k) {
			kinds = append(kinds, k)
		}
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("model cache directory %s: %w", dir, err)
	}
	quoted, _ := json.Marshal(abs) // a JSON string is a YAML double-quoted scalar
	var b strings.Builder
	b.WriteString("# Written by machine at every install: every ComfyUI instance reads models from the\n")
	b.WriteString("# shared model cache (MACHINE_MODEL_CACHE_DIR). Change the machine's settings, not this file.\n")
	b.WriteString("machine_model_cache:\n")
	fmt.Fprintf(&b, "  base_path: %s\n", quoted)
	for _, k := range kinds {
		fmt.Fprintf(&b, "  %s: %s\n", k, k)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create %s: %w", filepath.Dir(path), err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
