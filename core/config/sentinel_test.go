package config_test

import (
	"slices"
	"strings"
	"testing"
)

// Sentinels make the broker external (no embedded broker), and a list without its master name,
// or an entry that is not host:port, is reported with the fix.
func TestSentinels(t *testing.T) {
	c, err := load(map[string]string{"WORKER_CONNECTORS": "mock", "HUB_REDIS_SENTINELS": "s1:26379, s2:26379",
		"HUB_REDIS_SENTINEL_MASTER": "mymaster", "HUB_REDIS_SENTINEL_PASSWORD": "pw"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.RedisSentinels, []string{"s1:26379", "s2:26379"}) || c.RedisMaster != "mymaster" ||
		c.RedisSentinelPassword != "pw" || c.Embedded() {
		t.Fatalf("sentinels %v master %q embedded %v", c.RedisSentinels, c.RedisMaster, c.Embedded())
	}
	_, err = load(map[string]string{"WORKER_CONNECTORS": "mock", "HUB_REDIS_SENTINELS": "s1,s2:26379"})
	if err == nil || !strings.Contains(err.Error(), `"s1" is not host:port`) || !strings.Contains(err.Error(), "HUB_REDIS_SENTINEL_MASTER") {
		t.Fatalf("error %v", err)
	}
}
