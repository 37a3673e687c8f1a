package comfyui

import (
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/emp-job-queue/machine/core/config"
)

// With a model cache, the install writes the extra_model_paths.yaml of the shared cache, with
// the catalogue's own kinds besides ComfyUI's usual folders.
func TestInstallPointsComfyUIAtTheModelCache(t *testing.T) {
	catalog := filepath.Join(t.TempDir(), "catalog.json")
	sum := "0000000000000000000000000000000000000000000000000000000000000000"
	if err := os.WriteFile(catalog, []byte(`{"models":[{"name":"face.bin","url":"https://example.com/f","size":1,"sha256":"`+sum+`","kind":"ipadapter"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &config.Config{CacheDir: t.TempDir()}
	c.Demand.ModelCacheGB, c.Demand.ModelCatalog, c.Demand.ModelCacheDir = 10, catalog, "/models"
	path, err := sharedModels(c)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]map[string]string
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	if s := doc["machine_model_cache"]; s["base_path"] != "/models" || s["ipadapter"] != "ipadapter" || s["checkpoints"] != "checkpoints" {
		t.Errorf("extra_model_paths.yaml = %v", doc)
	}
}
