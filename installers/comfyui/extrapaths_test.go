package comfyui_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/emp-job-queue/machine/installers/comfyui"
)

// The file every ComfyUI instance is started with points each model folder at the shared
// cache, in the format ComfyUI's load_extra_path_config reads: one named section with a
// base_path and folder: subdirectory entries.
func TestExtraModelPathsPointAtTheSharedCache(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "models with space")
	path := filepath.Join(t.TempDir(), "comfyui", "extra_model_paths.yaml")
	if err := comfyui.WriteExtraModelPaths(path, dir, []string{"ipadapter", "loras"}); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("not YAML: %v\n%s", err, data)
	}
	sec := doc["machine_model_cache"]
	if sec["base_path"] != dir {
		t.Errorf("base_path = %v, want %s", sec["base_path"], dir)
	}
	for _, k := range append(slices.Clone(comfyui.ModelKinds), "ipadapter") {
		if sec[k] != k {
			t.Errorf("%s: %v, want the subdirectory %s of the cache", k, sec[k], k)
		}
	}
	if len(sec) != len(comfyui.ModelKinds)+2 { // the kinds, ipadapter and base_path
		t.Errorf("unexpected entries: %v", sec)
	}
	if err := comfyui.WriteExtraModelPaths(path, dir, []string{"../up"}); err == nil {
		t.Error("a kind that is not a plain subdirectory name was written")
	}

	spec := comfyui.ServiceSpec(comfyui.Install{Dir: "/workspace/ComfyUI", ExtraModelPaths: path}, "comfyui-gpu0", 8188, 0, "")
	if !strings.Contains(strings.Join(spec.Command, " "), "--extra-model-paths-config "+path) {
		t.Errorf("the instance is not started with the file: %v", spec.Command)
	}
	if plain := comfyui.ServiceSpec(comfyui.Install{Dir: "/workspace/ComfyUI"}, "comfyui-gpu0", 8188, 0, ""); slices.Contains(plain.Command, "--extra-model-paths-config") {
		t.Errorf("without a model cache the instance got the flag: %v", plain.Command)
	}
}
