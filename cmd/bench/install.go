package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The install bench: a full-stack `machine install --layer comfyui,browser,p5` (what the unified
// image runs) from local sources, timed fresh and again with everything installed. Left out, as
// they are the network: PyTorch and the other Python packages ComfyUI's requirements pull from
// PyPI (several GB), apt's Chromium download when Chromium is missing, and the transfer time of
// remote models. What remains is what the machine itself does: the clone, the venv, pip's runs,
// the custom nodes, the model downloads with their checksums, the browser check and p5.js.
const (
	benchNodes     = 8
	benchModelsMB  = 576 // 2 × 256 MB + 64 MB
	comfyMirror    = "/work/.mirror/stakeordie+ComfyUI/repo"
	comfyPinned    = "3fb07a804f1738b8f8c8b0d535eaccc72a9ddc7b"
	patternBlockMB = 1
)

func gitRun(dir string, args ...string) error {
	cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.email=bench@example.com", "-c", "user.name=bench"}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// comfySource makes the repository the bench installs ComfyUI from: ComfyUI's own tree at the
// image's pinned commit when the workplace's mirror is here (its files that the mirror holds;
// without the history), else a synthetic tree of 400 files; in both, an empty
// requirements.txt, since its packages come from PyPI.
func comfySource(dir string) (url, what string, err error) {
	repo := filepath.Join(dir, "ComfyUI-src")
	if err := os.MkdirAll(repo, 0o755); err != nil {
		return "", "", err
	}
	if err := gitRun(repo, "init", "--quiet", "-b", "bench"); err != nil {
		return "", "", err
	}
	files, size, err := exportTree(comfyMirror, comfyPinned, repo)
	what = fmt.Sprintf("ComfyUI's tree at %s, %d files, %.0f MB", comfyPinned[:7], files, float64(size)/(1<<20))
	if err != nil {
		what = "a synthetic 400-file tree (no ComfyUI mirror here)"
		for i := range 400 {
			body := strings.Repeat(fmt.Sprintf("# module %d\nvalue = %d\n", i, i), 200)
			if err := os.WriteFile(filepath.Join(repo, fmt.Sprintf("module_%03d.py", i)), []byte(body), 0o644); err != nil {
				return "", "", err
			}
		}
		_ = os.WriteFile(filepath.Join(repo, "main.py"), []byte("print('comfy')\n"), 0o644)
	}
	if err := os.WriteFile(filepath.Join(repo, "requirements.txt"), nil, 0o644); err != nil {
		return "", "", err
	}
	if err := gitRun(repo, "add", "-A"); err != nil {
		return "", "", err
	}
	if err := gitRun(repo, "commit", "--quiet", "-m", "bench: ComfyUI, its requirements left out (PyPI)"); err != nil {
		return "", "", err
	}
	return "file://" + repo, what, nil
}

// exportTree writes the files of commit in the bare repository src that src holds into dst.
func exportTree(src, commit, dst string) (files int, size int64, err error) {
	out, err := exec.Command("git", "-C", src, "ls-tree", "-r", "-z", commit).Output()
	if err != nil {
		return 0, 0, fmt.Errorf("read %s at %s: %w", src, commit, err)
	}
	for _, entry := range strings.Split(strings.TrimRight(string(out), "\x00"), "\x00") {
		meta, path, ok := strings.Cut(entry, "\t")
		f := strings.Fields(meta)
		if !ok || len(f) != 3 || f[1] != "blob" {
			continue
		}
		body, err := exec.Command("git", "-C", src, "cat-file", "blob", f[2]).Output()
		if err != nil {
			continue // a large blob the mirror does not hold
		}
		p := filepath.Join(dst, filepath.FromSlash(path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return files, size, err
		}
		if err := os.WriteFile(p, body, 0o644); err != nil {
			return files, size, err
		}
		files, size = files+1, size+int64(len(body))
	}
	if files == 0 {
		return 0, 0, fmt.Errorf("no files in %s at %s", src, commit)
	}
	return files, size, nil
}

// nodeSource makes one custom node: a small repository with an (empty) requirements file, so
// the installer runs pip for it as for a real node.
func nodeSource(dir string, i int) (string, error) {
	repo := filepath.Join(dir, fmt.Sprintf("node-%d", i))
	if err := os.MkdirAll(repo, 0o755); err != nil {
		return "", err
	}
	for j := range 20 {
		body := strings.Repeat(fmt.Sprintf("NODE_%d_%d = %d\n", i, j, j), 100)
		if err := os.WriteFile(filepath.Join(repo, fmt.Sprintf("nodes_%02d.py", j)), []byte(body), 0o644); err != nil {
			return "", err
		}
	}
	_ = os.WriteFile(filepath.Join(repo, "__init__.py"), []byte("NODE_CLASS_MAPPINGS = {}\n"), 0o644)
	_ = os.WriteFile(filepath.Join(repo, "requirements.txt"), nil, 0o644)
	if err := gitRun(repo, "init", "--quiet", "-b", "main"); err != nil {
		return "", err
	}
	if err := gitRun(repo, "add", "-A"); err != nil {
		return "", err
	}
	return "file://" + repo, gitRun(repo, "commit", "--quiet", "-m", "node")
}

// patternFile is a model file served from memory: a 1 MB random block repeated, so serving
// hundreds of MB needs neither disk nor memory on the server side, and ranges work.
type patternFile struct {
	block []byte
	size  int64
}

func (p patternFile) reader() io.ReadSeeker {
	return io.NewSectionReader(p, 0, p.size)
}

func (p patternFile) ReadAt(b []byte, off int64) (int, error) {
	n := 0
	for n < len(b) && off+int64(n) < p.size {
		pos := off + int64(n)
		n += copy(b[n:min(len(b), n+int(p.size-pos))], p.block[pos%int64(len(p.block)):])
	}
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

func (p patternFile) sha256() string {
	h := sha256.New()
	_, _ = io.Copy(h, p.reader())
	return hex.EncodeToString(h.Sum(nil))
}

// p5Tarball is a p5 npm package with a p5.min.js of p5's size (about 1 MB).
func p5Tarball() ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	js := []byte("/*! p5.js (bench) */" + strings.Repeat("p5.prototype.f=function(){return 1};", 28000))
	if err := tw.WriteHeader(&tar.Header{Name: "package/lib/p5.min.js", Mode: 0o644, Size: int64(len(js)), Typeflag: tar.TypeReg}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(js); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

type model struct {
	URL  string `json:"url"`
	Dest string `json:"destination"`
	Sum  string `json:"sha256"`
}

func installBench(bin, dir string) ([]row, error) {
	src := filepath.Join(dir, "install-sources")
	comfyURL, comfyWhat, err := comfySource(src)
	if err != nil {
		return nil, err
	}
	var nodes []map[string]any
	for i := range benchNodes {
		u, err := nodeSource(src, i)
		if err != nil {
			return nil, err
		}
		nodes = append(nodes, map[string]any{"name": fmt.Sprintf("bench-node-%d", i), "url": u, "requirements": true})
	}
	rng := rand.New(rand.NewPCG(1, 2))
	block := make([]byte, patternBlockMB<<20)
	for i := range block {
		block[i] = byte(rng.Uint32())
	}
	files := map[string]patternFile{
		"/sd15.safetensors": {block, 256 << 20}, "/controlnet.safetensors": {block[1:], 256 << 20}, "/vae.safetensors": {block[2:], 64 << 20},
	}
	p5, err := p5Tarball()
	if err != nil {
		return nil, err
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/p5.tgz" {
			http.ServeContent(w, r, "p5.tgz", time.Time{}, bytes.NewReader(p5))
			return
		}
		f, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		http.ServeContent(w, r, r.URL.Path, time.Time{}, f.reader())
	}))
	defer srv.Close()
	dests := map[string]string{"/sd15.safetensors": "models/checkpoints/sd15.safetensors",
		"/controlnet.safetensors": "models/controlnet/cn.safetensors", "/vae.safetensors": "models/vae/vae.safetensors"}
	var models []model
	for path, f := range files {
		models = append(models, model{URL: srv.URL + path, Dest: dests[path], Sum: f.sha256()})
	}
	manifest, _ := json.Marshal(map[string]any{"custom_nodes": nodes, "models": models})
	manifestPath := filepath.Join(src, "manifest.json")
	if err := os.WriteFile(manifestPath, manifest, 0o644); err != nil {
		return nil, err
	}
	p5sum := sha256.Sum256(p5)

	run := func(root string) (time.Duration, error) {
		cmd := exec.Command(bin, "install", "--layer", "comfyui,browser,p5", "--from", srv.URL+"/p5.tgz", "--sha256", hex.EncodeToString(p5sum[:]))
		cmd.Env = append(os.Environ(), "COMFYUI_REPO_URL="+comfyURL, "COMFYUI_BRANCH=bench", "COMFYUI_COMMIT=",
			"COMFYUI_DIR="+filepath.Join(root, "ComfyUI"), "COMFYUI_MANIFEST="+manifestPath, "MACHINE_CACHE_DIR="+filepath.Join(root, "cache"),
			"MACHINE_WORKSPACE="+root, "MACHINE_RUN_DIR="+filepath.Join(root, "run"), "PLAYWRIGHT_P5_JS="+filepath.Join(root, "p5", "p5.min.js"),
			"MACHINE_INSTALL_STRICT=true", "PIP_NO_CACHE_DIR=1", "PIP_DISABLE_PIP_VERSION_CHECK=1")
		start := time.Now()
		out, err := cmd.CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("machine install: %v\n%s", err, out)
		}
		return time.Since(start), nil
	}
	var fresh, again []time.Duration
	for i := range 3 {
		root := filepath.Join(dir, fmt.Sprintf("install-%d", i))
		d, err := run(root)
		if err != nil {
			return nil, err
		}
		fresh = append(fresh, d)
		for range 2 {
			d, err := run(root)
			if err != nil {
				return nil, err
			}
			again = append(again, d)
		}
		_ = os.RemoveAll(root)
	}
	return []row{
		{"full-stack install from local sources, median of 3", secs(percentile(fresh, 0.5)), secs(percentile(again, 0.5)) + " (re-run, all installed)",
			fmt.Sprintf("×%.0f", ratio(fresh, again)), "< 5 min"},
		{fmt.Sprintf("  sources: %s; %d custom nodes; %d MB of models over local HTTP", comfyWhat, benchNodes, benchModelsMB), "", "", "", ""},
		{"  left out (the network): PyPI packages (PyTorch, CUDA wheels), apt's Chromium, remote transfer time", "", "", "", ""},
		{"install re-run with everything installed, median of 6", secs(percentile(again, 0.5)), "", "", ""},
	}, nil
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }
