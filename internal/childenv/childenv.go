// Package childenv is the environment the machine's child processes get: supervised services,
// and the git, pip and custom scripts of installers. They run code the machine does not control,
// so they see only what they need to run and to reach the network through the host's proxy,
// never the machine's secrets (the Redis password, MACHINE_API_TOKEN, provider keys).
package childenv

import "os"

// Inherited are the variables passed on from the machine's environment.
var Inherited = []string{"PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER",
	"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR"}

// Base returns the inherited variables that are set, then extra (later entries win).
func Base(extra ...string) []string {
	var env []string
	for _, k := range Inherited {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return append(env, extra...)
}
