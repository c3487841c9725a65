package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"herald/internal/redistest"
)

// compose is the part of docker-compose.yml the checks read. YAML anchors
// and merge keys (<<) are resolved by the parser, as Compose does.
type compose struct {
	Services map[string]service `yaml:"services"`
	Volumes  map[string]any     `yaml:"volumes"`
}

type service struct {
	Image       string            `yaml:"image"`
	Build       any               `yaml:"build"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Ports       []string          `yaml:"ports"`
	Volumes     []string          `yaml:"volumes"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
		Restart   bool   `yaml:"restart"`
	} `yaml:"depends_on"`
	Healthcheck struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
	StopGracePeriod string `yaml:"stop_grace_period"`
	Ulimits         struct {
		Nofile struct {
			Soft int `yaml:"soft"`
			Hard int `yaml:"hard"`
		} `yaml:"nofile"`
	} `yaml:"ulimits"`
}

func readCompose(t *testing.T) compose {
	t.Helper()
	b, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c compose
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return c
}

var composeVar = regexp.MustCompile(`\$\{(\w+)(:[?-])?([^}]*)\}`)

// interpolated resolves Compose's ${VAR:?msg} and ${VAR:-default} the way
// `docker compose up` would with the variables in vars set.
func interpolated(v string, vars map[string]string) string {
	return composeVar.ReplaceAllStringFunc(v, func(m string) string {
		p := composeVar.FindStringSubmatch(m)
		if val, ok := vars[p[1]]; ok && val != "" {
			return val
		}
		if p[2] == ":-" {
			return p[3]
		}
		return ""
	})
}

func TestCompose_TwoNodesOnRedisBehindNginx(t *testing.T) {
	c := readCompose(t)
	for _, name := range []string{"redis", "herald-1", "herald-2", "nginx"} {
		if _, ok := c.Services[name]; !ok {
			t.Fatalf("no service %s", name)
		}
	}

	redis := c.Services["redis"]
	cmd := strings.Join(redis.Command, " ")
	if !strings.Contains(cmd, "--appendonly yes") || !regexp.MustCompile(`--appendfsync (always|everysec)`).MatchString(cmd) {
		t.Errorf("redis runs without AOF: %q", cmd)
	}
	if !strings.Contains(cmd, "--appendfsync always") {
		t.Errorf("redis fsyncs less than each write (%q): an acknowledged webhook could be lost with its epoch kept", cmd)
	}
	// The command as Compose runs it, on a real redis-server.
	args := make([]string, 0, len(redis.Command))
	for _, a := range redis.Command[1:] {
		args = append(args, interpolated(a, nil))
	}
	srv := redistest.Start(t, redistest.Options{Args: args})
	for setting, want := range map[string]string{
		"maxmemory-policy": "noeviction", // an evicted key loses or repeats publications
		"maxmemory":        "2147483648", // full is refused (503), not killed by the kernel
		"save":             "",           // a failed snapshot would refuse every write
		"appendfsync":      "always",
	} {
		got, err := srv.Do("CONFIG", "GET", setting)
		if err != nil || got != setting+"\n"+want {
			t.Errorf("redis %s: %q, %v; want %q", setting, got, err, want)
		}
	}
	if len(redis.Volumes) == 0 || !strings.HasSuffix(redis.Volumes[0], ":/data") {
		t.Errorf("redis data is not kept in a volume: %v", redis.Volumes)
	} else if _, ok := c.Volumes[strings.Split(redis.Volumes[0], ":")[0]]; !ok {
		t.Errorf("redis data is not on a named volume: %v", redis.Volumes)
	}

	ids := map[string]bool{}
	for _, name := range []string{"herald-1", "herald-2"} {
		s := c.Services[name]
		env := s.Environment
		if env["HERALD_REDIS_URL"] != "redis://redis:6379" {
			t.Errorf("%s: HERALD_REDIS_URL %q", name, env["HERALD_REDIS_URL"])
		}
		if env["HERALD_NODE_ID"] == "" || ids[env["HERALD_NODE_ID"]] {
			t.Errorf("%s: HERALD_NODE_ID %q is empty or shared", name, env["HERALD_NODE_ID"])
		}
		ids[env["HERALD_NODE_ID"]] = true
		for _, k := range []string{"HERALD_JWT_SECRET", "HERALD_JWT_PUBLIC_KEY"} {
			if env[k] != "${"+k+":-}" {
				t.Errorf("%s: %s must come from the operator's environment: %q", name, k, env[k])
			}
		}
		if s.Build == nil {
			t.Errorf("%s: not built from the Dockerfile", name)
		}
		if strings.Join(s.Healthcheck.Test, " ") != "CMD /herald healthcheck" {
			t.Errorf("%s: healthcheck %v does not run in the distroless image", name, s.Healthcheck.Test)
		}
		if s.DependsOn["redis"].Condition != "service_healthy" {
			t.Errorf("%s: does not wait for a healthy redis", name)
		}
		grace, err := time.ParseDuration(s.StopGracePeriod)
		timeout, terr := time.ParseDuration(env["HERALD_SHUTDOWN_TIMEOUT"])
		if err != nil || terr != nil || grace <= timeout {
			t.Errorf("%s: stop_grace_period %q must exceed HERALD_SHUTDOWN_TIMEOUT %q", name, s.StopGracePeriod, env["HERALD_SHUTDOWN_TIMEOUT"])
		}
		if len(s.Ports) > 0 {
			t.Errorf("%s publishes ports %v: clients go through nginx", name, s.Ports)
		}
	}

	nginx := c.Services["nginx"]
	if !contains(nginx.Volumes, "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro") {
		t.Errorf("nginx does not mount deploy/nginx.conf: %v", nginx.Volumes)
	}
	if !contains(nginx.Ports, "8080:8080") {
		t.Errorf("nginx ports %v", nginx.Ports)
	}
	conf, _ := os.ReadFile("nginx.conf")
	for _, n := range []string{"herald-1", "herald-2"} {
		if nginx.DependsOn[n].Condition != "service_healthy" {
			t.Errorf("nginx does not wait for a healthy %s", n)
		}
		// Restarting nginx with a node would drop every client of every
		// node at once: nginx follows the node's address instead.
		if nginx.DependsOn[n].Restart {
			t.Errorf("nginx is restarted when %s is recreated, dropping every client", n)
		}
		if !strings.Contains(string(conf), "server "+n+":8080 resolve") {
			t.Errorf("nginx.conf does not balance to %s:8080, looked up as it changes", n)
		}
	}
	if !strings.Contains(string(conf), "resolver 127.0.0.11") {
		t.Error("nginx.conf has no resolver: resolve needs Docker's DNS")
	}
	if nginx.Ulimits.Nofile.Soft < 65536 {
		t.Errorf("nginx's file limit %+v: a container's default 1024 carries 500 websockets per worker", nginx.Ulimits)
	}
}

// providerSetting matches the settings of SPEC §3's providers, which a
// build may enable one by one.
var providerSetting = regexp.MustCompile(`^HERALD_INGRESS_(KRIPTOMAT|COINIFY|0XPAY|PARTNER|GATEWAY)_(SECRET|MERCHANT)$`)

// notPassed are the settings the compose file keeps from the operator:
// the image's listen address, dev mode, and the Redis it runs itself.
var notPassed = map[string]bool{"HERALD_ADDR": true, "HERALD_DEV": true, "HERALD_REDIS_CLUSTER": true}

// TestCompose_NodesAcceptTheirConfiguration runs `herald config` with each
// node's environment as Compose would set it: every variable must be a
// setting herald knows, with a value it accepts, and every setting but
// notPassed must be there.
func TestCompose_NodesAcceptTheirConfiguration(t *testing.T) {
	c := readCompose(t)
	bin := filepath.Join(t.TempDir(), "herald")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/herald").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	known := map[string]bool{}
	help, _ := exec.Command(bin, "--help").CombinedOutput()
	for _, m := range regexp.MustCompile(`\((HERALD_\w+)\)`).FindAllStringSubmatch(string(help), -1) {
		known[m[1]] = true
	}
	vars := map[string]string{"HERALD_JWT_SECRET": "s3cret", "HERALD_INGRESS_KRIPTOMAT_SECRET": "k", "HERALD_INGRESS_KRIPTOMAT_MERCHANT": "acme"}
	for _, name := range []string{"herald-1", "herald-2"} {
		cmd := exec.Command(bin, "config")
		cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
		for k, v := range c.Services[name].Environment {
			if !known[k] && !providerSetting.MatchString(k) {
				t.Errorf("%s: %s is not a herald setting", name, k)
			}
			cmd.Env = append(cmd.Env, k+"="+interpolated(v, vars))
		}
		// Every setting an operator may change reaches the nodes: one left
		// out would be ignored without a word (an allow list, iss/aud).
		for k := range known {
			if _, ok := c.Services[name].Environment[k]; !ok && !notPassed[k] {
				t.Errorf("%s: %s is not passed to the node", name, k)
			}
		}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: herald config: %v\n%s", name, err, out)
		}
		for _, line := range []string{"HERALD_REDIS_URL=redis://redis:6379", "HERALD_NODE_ID=" + name, "HERALD_INGRESS_KRIPTOMAT_MERCHANT=acme"} {
			if !strings.Contains(string(out), line+"\n") {
				t.Errorf("%s: effective configuration lacks %s:\n%s", name, line, out)
			}
		}
	}
}

// TestDockerfile_MatchesCompose: the image's binary is where the health
// check calls it, on a base without a shell.
func TestDockerfile_MatchesCompose(t *testing.T) {
	b, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{
		"FROM gcr.io/distroless/static",
		"CGO_ENABLED=0 go build",
		"COPY --from=build /herald /herald",
		`ENTRYPOINT ["/herald"]`,
		`HEALTHCHECK`,
		`CMD ["/herald", "healthcheck"]`,
	} {
		if !strings.Contains(s, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
