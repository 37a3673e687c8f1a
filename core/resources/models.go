package resources

import (
	"os"
	"path/filepath"

	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/installers/comfyui"
)

// Models reads the model set of COMFYUI_MANIFEST and what of it, and of ComfyUI, is installed
// in COMFYUI_DIR: a file on disk is sized from the disk, one still to download from its folder.
func Models(cfg *config.Config) (ModelSet, error) {
	dir := cfg.ComfyUI.Dir
	set := ModelSet{ComfyUIInstalled: exists(filepath.Join(dir, "main.py")) && exists(filepath.Join(dir, ".venv", "bin", "python"))}
	if cfg.ComfyUI.Manifest == "" {
		return set, nil
	}
	m, err := comfyui.LoadManifest(cfg.ComfyUI.Manifest)
	if err != nil {
		return set, err
	}
	set.Manifest = true
	for _, n := range m.CustomNodes {
		if !exists(filepath.Join(dir, "custom_nodes", n.Name)) {
			set.NodesToInstall++
		}
	}
	for _, mo := range m.Models {
		model := Model{Dest: mo.Dest, SizeMB: EstimateSizeMB(mo.Dest), Estimated: true}
		if st, err := os.Stat(filepath.Join(dir, mo.Dest)); err == nil && st.Mode().IsRegular() {
			model.SizeMB, model.Estimated, model.Present = float64(st.Size())/(1<<20), false, true
		}
		set.Models = append(set.Models, model)
	}
	return set, nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
