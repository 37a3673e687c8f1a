package supervisor

// SpecHash lets tests plant a pid file that claims to be a service as configured now.
func SpecHash(s Spec) string { return specHash(s) }
