package installers

import "regexp"

var (
	// userinfo is the user:password@ of a URL, wherever it appears in a text.
	userinfo = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s'"]+@`)
	// secretParam is a query parameter that carries a credential (Hugging Face and Civitai
	// tokens, signed S3 URLs).
	secretParam = regexp.MustCompile(`(?i)([?&](?:[a-z0-9_-]*token|[a-z0-9_-]*key|[a-z0-9_-]*secret|password|passwd|sig|signature|x-amz-signature|x-amz-credential|x-amz-security-token|auth|authorization)=)[^&#\s'"]*`)
)

// Redact cuts credentials out of the URLs in s (user and password, tokens in the query), for
// logs and errors: manifests may name private repositories and gated models.
func Redact(s string) string {
	s = userinfo.ReplaceAllString(s, "${1}xxxxx@")
	return secretParam.ReplaceAllString(s, "${1}xxxxx")
}
