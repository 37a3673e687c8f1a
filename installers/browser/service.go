package browser

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Options say how the browser service runs.
type Options struct {
	Port       int    // DevTools listens on 127.0.0.1:Port (kept off every job's reach by the connector's proxy)
	ProfileDir string // --user-data-dir (PrepareProfile makes it)
	Sandbox    bool   // Chromium's own sandbox; false adds --no-sandbox
}

// FailClosedProxy is the proxy of the browser's default context: nothing listens there. Jobs
// never use the default context (each gets a context of its own, whose proxy filters what it
// may reach), so a page that ever loads in it fails instead of reaching the network unchecked.
const FailClosedProxy = "http://127.0.0.1:1"

// Flags are the arguments the browser service runs with: headless, DevTools on
// 127.0.0.1:port, a profile of its own, none of the background traffic a closed network
// refuses, every request through a proxy (loopback included: "<-loopback>" removes
// Chromium's implicit bypass of localhost), and no WebRTC UDP, which no HTTP proxy carries.
func Flags(o Options) []string {
	f := []string{"--headless=new", "--disable-gpu", "--disable-dev-shm-usage",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
		"--no-first-run", "--no-default-browser-check", "--hide-scrollbars", "--mute-audio",
		"--proxy-server=" + FailClosedProxy, "--proxy-bypass-list=<-loopback>",
		"--webrtc-ip-handling-policy=disable_non_proxied_udp",
		"--remote-debugging-address=127.0.0.1", fmt.Sprintf("--remote-debugging-port=%d", o.Port),
		"--user-data-dir=" + o.ProfileDir}
	if !o.Sandbox {
		f = append(f, "--no-sandbox")
	}
	return append(f, "about:blank")
}

// Credential is who the browser runs as. A machine that is not root runs it as itself (nil).
// A machine that runs as root runs it as the named user, since Chromium's sandbox cannot work
// for root, and since a browser that runs job pages should hold no more than it needs; nil
// when that user is root itself (the operator chose to run it unsandboxed).
func Credential(name string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	var u *user.User
	var err error
	if _, nerr := strconv.Atoi(name); nerr == nil {
		u, err = user.LookupId(name)
	} else {
		u, err = user.Lookup(name)
	}
	if err != nil {
		return nil, fmt.Errorf("the browser's user %q: %w; set BROWSER_USER to an existing unprivileged user", name, err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return nil, fmt.Errorf("the browser's user %q has ids %s:%s, not numbers", name, u.Uid, u.Gid)
	}
	if uid == 0 {
		return nil, nil
	}
	// Groups: empty, not nil, so the child drops root's supplementary groups.
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
}

// PrepareProfile makes the browser's profile directory, which is also its HOME, and returns
// its path. Run as the machine's user (cred nil), it is dir. Run as another user, it cannot be
// under dir, whose parents (the 0700 run directory) that user cannot enter: it is a directory
// under the system's temporary directory named after dir, created by the machine (so nobody
// can plant it), then given to that user, mode 0700. One already there is used only when it
// is a real directory that user owns and nobody else can write.
func PrepareProfile(dir string, cred *syscall.Credential) (string, error) {
	if cred == nil {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", fmt.Errorf("create the browser profile: %w", err)
		}
		return dir, nil
	}
	sum := sha256.Sum256([]byte(dir))
	path := filepath.Join(os.TempDir(), fmt.Sprintf("machine-browser-%d-%s", cred.Uid, hex.EncodeToString(sum[:6])))
	err := os.Mkdir(path, 0o700)
	switch {
	case err == nil:
		if err := os.Chown(path, int(cred.Uid), int(cred.Gid)); err != nil {
			_ = os.Remove(path)
			return "", fmt.Errorf("give the browser profile %s to uid %d: %w", path, cred.Uid, err)
		}
		return path, nil
	case !os.IsExist(err):
		return "", fmt.Errorf("create the browser profile: %w", err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return "", fmt.Errorf("check the browser profile: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || st.Uid != cred.Uid || fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("%s exists but is not a directory of uid %d with mode 0700 (someone else may have planted it); remove it and start again", path, cred.Uid)
	}
	return path, nil
}

// CheckSandbox starts Chromium once, as the user it will run as, to see whether this host
// lets it build its sandbox (unprivileged user namespaces: Docker's default seccomp profile
// and Ubuntu's AppArmor restriction refuse them). Without the check the browser service would
// just crash-loop with Chromium's own message buried in its log.
func CheckSandbox(ctx context.Context, path string, cred *syscall.Credential) error {
	dir, err := os.MkdirTemp("", "machine-browser-check-")
	if err != nil {
		return fmt.Errorf("check the browser sandbox: %w", err)
	}
	defer os.RemoveAll(dir)
	if cred != nil {
		if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
			return fmt.Errorf("check the browser sandbox: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "--headless=new", "--disable-gpu", "--no-first-run", "--disable-background-networking",
		"--proxy-server="+FailClosedProxy, "--user-data-dir="+dir, "--dump-dom", "about:blank")
	cmd.Env = []string{"HOME=" + dir, "PATH=" + os.Getenv("PATH")}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: cred}
	out, err := cmd.CombinedOutput()
	switch {
	case bytes.Contains(out, []byte("No usable sandbox")):
		return errors.New("this host does not let Chromium build its sandbox (unprivileged user namespaces are blocked, e.g. by Docker's default seccomp profile or kernel.apparmor_restrict_unprivileged_userns=1); allow them (a seccomp profile that permits clone/unshare of user namespaces), or set BROWSER_SANDBOX=false to run it unsandboxed")
	case err != nil && ctx.Err() == nil:
		return fmt.Errorf("the browser %s did not start (%v): %s", path, err, lastLine(out))
	}
	return nil
}

func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}
