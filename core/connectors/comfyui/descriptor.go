package comfyui

import (
	"context"
	"path/filepath"
	"slices"

	"github.com/emp-job-queue/machine/core/config"
	"github.com/emp-job-queue/machine/core/connectors"
	"github.com/emp-job-queue/machine/core/modelcache"
	"github.com/emp-job-queue/machine/core/supervisor"
	"github.com/emp-job-queue/machine/installers"
	comfyinstall "github.com/emp-job-queue/machine/installers/comfyui"
)

// Descriptor is the comfyui connector: one ComfyUI instance per GPU, installed and supervised by
// the machine, one slot per instance.
var Descriptor = connectors.Descriptor{
	Name: "comfyui", JobServices: []string{"comfyui"}, StatusServices: []string{"comfyui"}, GPUBound: true,
	Service: &connectors.ServiceKind{
		Kind: "comfyui", PerGPU: true, Install: install,
		BasePort: func(c *config.Config) int { return c.ComfyUIBasePort },
	},
	New: func(env connectors.Env) connectors.Connector {
		return New(Settings{BaseURL: env.ServiceURL, Inactivity: env.Config.ComfyUI.Inactivity, Assets: env.Assets})
	},
}

// RemoteDescriptor is the comfyui-remote connector: ComfyUI jobs sent to a server elsewhere.
var RemoteDescriptor = connectors.Descriptor{
	Name: "comfyui-remote", JobServices: []string{"comfyui"}, StatusServices: []string{"comfyui-remote"},
	Check: func(c *config.Config) []string {
		if c.ComfyUI.RemoteURL == "" {
			return []string{"WORKER_CONNECTORS has comfyui-remote but WORKER_COMFYUI_REMOTE_HOST is unset; set it to the remote ComfyUI's host"}
		}
		return nil
	},
	New: func(env connectors.Env) connectors.Connector {
		c := env.Config.ComfyUI
		return New(Settings{BaseURL: c.RemoteURL, Token: c.RemoteKey, Inactivity: c.Inactivity, Assets: env.Assets})
	},
}

// Installation is the ComfyUI installation the configuration describes (without its manifest).
func Installation(c *config.Config) comfyinstall.Install {
	return comfyinstall.Install{
		Dir: c.ComfyUI.Dir, RepoURL: c.ComfyUI.RepoURL, Branch: c.ComfyUI.Branch, Commit: c.ComfyUI.Commit,
		Download: &installers.Downloader{Cache: filepath.Join(c.CacheDir, "downloads"), AllowUnverified: c.AllowUnverifiedDownloads},
	}
}

// sharedModels writes the extra_model_paths.yaml that points every instance at the shared model
// cache (MACHINE_MODEL_CACHE_DIR) and returns its path.
func sharedModels(c *config.Config) (string, error) {
	var kinds []string
	if catalog, err := modelcache.LoadCatalog(c.Demand.ModelCatalog); err == nil {
		for _, m := range catalog {
			kinds = append(kinds, m.Kind)
		}
	} // a broken catalogue stops the machine at start (machine.New): only ModelKinds then
	slices.Sort(kinds)
	path := filepath.Join(c.CacheDir, "comfyui", "extra_model_paths.yaml")
	if err := comfyinstall.WriteExtraModelPaths(path, c.Demand.ModelCacheDir, kinds); err != nil {
		return "", err
	}
	return path, nil
}

// install installs ComfyUI with the custom nodes and models of COMFYUI_MANIFEST, within
// SERVICE_INSTALL_TIMEOUT.
func install(ctx context.Context, env connectors.InstallEnv) (connectors.SpecFunc, error) {
	c := env.Config
	in := Installation(c)
	if c.ComfyUI.Manifest != "" {
		manifest, err := comfyinstall.LoadManifest(c.ComfyUI.Manifest)
		if err != nil {
			return nil, err
		}
		in.Manifest = manifest
	}
	runner := &installers.Runner{MarkerDir: filepath.Join(c.CacheDir, "markers"), Parallel: 4,
		Timeout: c.InstallTimeout, Strict: c.InstallStrict, Log: env.Log}
	if err := in.Prepare(ctx, runner); err != nil {
		return nil, err
	}
	if c.Demand.ModelCacheGB > 0 {
		path, err := sharedModels(c)
		if err != nil {
			return nil, err
		}
		in.ExtraModelPaths = path
	}
	return func(i connectors.Instance) supervisor.Spec {
		return comfyinstall.ServiceSpec(in, i.Name, i.Port, i.GPU, c.ComfyArgs)
	}, nil
}
