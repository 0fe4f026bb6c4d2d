package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// k8sDoc is one Kubernetes object, as generic YAML.
type k8sDoc map[string]any

// at walks a dotted path (list items by index) and returns the value, or
// nil.
func (d k8sDoc) at(path string) any {
	var v any = map[string]any(d)
	for _, k := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			v = x[k]
		case []any:
			var i int
			if _, err := fmt.Sscan(k, &i); err != nil || i >= len(x) {
				return nil
			}
			v = x[i]
		default:
			return nil
		}
	}
	return v
}

func (d k8sDoc) str(path string) string { s, _ := d.at(path).(string); return s }

// TestKubernetesManifests parses every YAML document in deploy/kubernetes
// and checks the kinds, their required fields, and that the pieces fit
// together: selectors and labels, probe and service ports, volumes and
// mounts, the privileges envgate needs, and the ConfigMap's envgate.yaml
// (which must load as any config does).
func TestKubernetesManifests(t *testing.T) {
	files, _ := filepath.Glob("../../deploy/kubernetes/*.yaml")
	if len(files) == 0 {
		t.Fatal("no manifests in deploy/kubernetes")
	}
	byKind := map[string][]k8sDoc{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for i := 0; ; i++ {
			var raw map[string]any // not k8sDoc: yaml would make nested maps k8sDocs too
			err := dec.Decode(&raw)
			d := k8sDoc(raw)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			if d == nil {
				continue
			}
			for _, k := range []string{"apiVersion", "kind", "metadata.name"} {
				if d.str(k) == "" {
					t.Errorf("%s document %d: no %s", f, i, k)
				}
			}
			if d.str("kind") != "Namespace" && d.str("metadata.namespace") != "envgate" {
				t.Errorf("%s: %s %s is not in namespace envgate", f, d.str("kind"), d.str("metadata.name"))
			}
			byKind[d.str("kind")] = append(byKind[d.str("kind")], d)
		}
	}
	for _, k := range []string{"Namespace", "ConfigMap", "DaemonSet", "Service", "Ingress"} {
		if len(byKind[k]) != 1 {
			t.Fatalf("%d objects of kind %s, want 1", len(byKind[k]), k)
		}
	}
	ds, svc, ing, cm := byKind["DaemonSet"][0], byKind["Service"][0], byKind["Ingress"][0], byKind["ConfigMap"][0]

	// The DaemonSet.
	if ds.str("apiVersion") != "apps/v1" {
		t.Errorf("DaemonSet apiVersion %q", ds.str("apiVersion"))
	}
	sel, _ := ds.at("spec.selector.matchLabels").(map[string]any)
	labels, _ := ds.at("spec.template.metadata.labels").(map[string]any)
	if len(sel) == 0 {
		t.Error("DaemonSet: no spec.selector.matchLabels")
	}
	for k, v := range sel {
		if labels[k] != v {
			t.Errorf("DaemonSet: selector %s=%v not in the pod template's labels", k, v)
		}
	}
	if ds.at("spec.template.spec.hostNetwork") != true {
		t.Error("DaemonSet: hostNetwork must be true (envs are reached over veths in the host's namespace)")
	}
	c := k8sDoc(ds.at("spec.template.spec.containers.0").(map[string]any))
	if c.str("image") == "" || c.str("name") == "" {
		t.Error("DaemonSet: container without name or image")
	}
	caps := fmt.Sprint(c.at("securityContext.capabilities.add"))
	if c.at("securityContext.privileged") != true || !strings.Contains(caps, "SYS_ADMIN") || !strings.Contains(caps, "NET_ADMIN") {
		t.Errorf("DaemonSet: securityContext %v: want privileged with SYS_ADMIN and NET_ADMIN", c.at("securityContext"))
	}
	ports := map[string]int{}
	for _, p := range c.at("ports").([]any) {
		p := k8sDoc(p.(map[string]any))
		n, _ := p.at("containerPort").(int)
		ports[p.str("name")] = n
	}
	for _, probe := range []string{"readinessProbe", "livenessProbe"} {
		if c.str(probe+".httpGet.path") != "/healthz" {
			t.Errorf("DaemonSet: %s is not an httpGet of /healthz", probe)
		}
		if _, ok := ports[c.str(probe+".httpGet.port")]; !ok {
			t.Errorf("DaemonSet: %s port %q is no container port", probe, c.str(probe+".httpGet.port"))
		}
	}
	volumes := map[string]k8sDoc{}
	for _, v := range ds.at("spec.template.spec.volumes").([]any) {
		v := k8sDoc(v.(map[string]any))
		volumes[v.str("name")] = v
	}
	mounts := map[string]k8sDoc{}
	for _, m := range c.at("volumeMounts").([]any) {
		m := k8sDoc(m.(map[string]any))
		if volumes[m.str("name")] == nil {
			t.Errorf("DaemonSet: mount of undeclared volume %q", m.str("name"))
		}
		mounts[m.str("mountPath")] = m
	}
	for path, want := range map[string]string{"/run/netns": "/run/netns", "/sys/fs/cgroup": "/sys/fs/cgroup", "/var/lib/envgate": "/var/lib/envgate"} {
		m := mounts[path]
		if m == nil {
			t.Errorf("DaemonSet: nothing mounted at %s", path)
			continue
		}
		if got := volumes[m.str("name")].str("hostPath.path"); got != want {
			t.Errorf("DaemonSet: %s is not the host's %s (hostPath %q)", path, want, got)
		}
	}
	if mounts["/run/netns"] != nil && mounts["/run/netns"].str("mountPropagation") != "Bidirectional" {
		t.Error("DaemonSet: /run/netns needs mountPropagation: Bidirectional")
	}
	if volumes[mounts["/etc/envgate"].str("name")].str("configMap.name") != cm.str("metadata.name") {
		t.Error("DaemonSet: /etc/envgate is not the ConfigMap")
	}

	// The config: it loads, and its health port is the probes'.
	data, _ := cm.at("data").(map[string]any)
	text, _ := data["envgate.yaml"].(string)
	cfg, err := parseConfig("deploy/kubernetes/configmap.yaml", []byte(text))
	if err != nil {
		t.Fatalf("the ConfigMap's envgate.yaml: %v", err)
	}
	_, mport, _ := net.SplitHostPort(cfg.Admin.Metrics)
	if fmt.Sprint(ports["metrics"]) != mport {
		t.Errorf("admin.metrics port %s, the probes' container port %d", mport, ports["metrics"])
	}
	_, hport, _ := net.SplitHostPort(cfg.Listen.HTTP)
	if fmt.Sprint(ports["http"]) != hport {
		t.Errorf("listen.http port %s, container port http %d", hport, ports["http"])
	}
	if !strings.HasPrefix(cfg.StateDir, "/var/lib/envgate") || !strings.HasPrefix(cfg.Admin.Socket, cfg.StateDir) {
		t.Errorf("state_dir %s / admin.socket %s are not on the state volume", cfg.StateDir, cfg.Admin.Socket)
	}

	// The Service selects the pods and targets their ports; the Ingress
	// goes to the Service.
	for k, v := range svc.at("spec.selector").(map[string]any) {
		if labels[k] != v {
			t.Errorf("Service: selector %s=%v matches no pod", k, v)
		}
	}
	svcPorts := map[string]bool{}
	for _, p := range svc.at("spec.ports").([]any) {
		p := k8sDoc(p.(map[string]any))
		if _, ok := ports[p.str("targetPort")]; !ok {
			t.Errorf("Service: targetPort %q is no container port", p.str("targetPort"))
		}
		svcPorts[p.str("name")] = true
	}
	if ing.str("apiVersion") != "networking.k8s.io/v1" {
		t.Errorf("Ingress apiVersion %q", ing.str("apiVersion"))
	}
	b := k8sDoc(ing.at("spec.rules.0.http.paths.0.backend").(map[string]any))
	if b.str("service.name") != svc.str("metadata.name") || !svcPorts[b.str("service.port.name")] {
		t.Errorf("Ingress backend %v is not the Service's", b)
	}
}

// TestDockerfileDocumentsPrivileges: the image is multi-stage and says
// what the container needs. (No container builder runs in the tests.)
func TestDockerfileDocumentsPrivileges(t *testing.T) {
	b, err := os.ReadFile("../../deploy/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if n := strings.Count(s, "\nFROM "); n < 2 {
		t.Errorf("%d FROM stages, want a multi-stage build", n)
	}
	for _, want := range []string{"SYS_ADMIN", "NET_ADMIN", "--network host", "/run/netns", "/sys/fs/cgroup", "/var/lib/envgate", "ENTRYPOINT"} {
		if !strings.Contains(s, want) {
			t.Errorf("the Dockerfile does not mention %s", want)
		}
	}
}

// TestKubernetesClusterManifests checks deploy/kubernetes/cluster: its
// config loads in cluster mode with the advertise address the DaemonSet
// sets, the secret and the shared volume are mounted where the config
// says, and the Ingress hashes on the Host.
func TestKubernetesClusterManifests(t *testing.T) {
	b, err := os.ReadFile("../../deploy/kubernetes/cluster/envgate-cluster.yaml")
	if err != nil {
		t.Fatal(err)
	}
	byKind := map[string]k8sDoc{}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var raw map[string]any
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		d := k8sDoc(raw)
		if d.str("kind") != "Namespace" && d.str("metadata.namespace") != "envgate" {
			t.Errorf("%s %s is not in namespace envgate", d.str("kind"), d.str("metadata.name"))
		}
		byKind[d.str("kind")] = d
	}
	for _, k := range []string{"Namespace", "ConfigMap", "PersistentVolumeClaim", "DaemonSet", "Service", "Ingress"} {
		if byKind[k] == nil {
			t.Fatalf("no %s", k)
		}
	}
	ds, cm, pvc, ing := byKind["DaemonSet"], byKind["ConfigMap"], byKind["PersistentVolumeClaim"], byKind["Ingress"]
	c := k8sDoc(ds.at("spec.template.spec.containers.0").(map[string]any))
	env := map[string]string{}
	for _, e := range c.at("env").([]any) {
		e := k8sDoc(e.(map[string]any))
		env[e.str("name")] = e.str("value")
	}
	if env["ENVGATE_CLUSTER_ADVERTISE"] != "$(POD_IP):8080" {
		t.Errorf("ENVGATE_CLUSTER_ADVERTISE %q, want $(POD_IP):8080", env["ENVGATE_CLUSTER_ADVERTISE"])
	}
	t.Setenv(advertiseEnv, "10.0.0.5:8080")
	data, _ := cm.at("data").(map[string]any)
	text, _ := data["envgate.yaml"].(string)
	cfg, err := parseConfig("deploy/kubernetes/cluster/envgate-cluster.yaml", []byte(text))
	if err != nil {
		t.Fatalf("the ConfigMap's envgate.yaml: %v", err)
	}
	if cfg.Cluster == nil || cfg.Cluster.Advertise != "10.0.0.5:8080" {
		t.Fatalf("cluster section %+v: want advertise from the environment", cfg.Cluster)
	}
	if _, port, _ := net.SplitHostPort(cfg.Listen.HTTP); ":"+port != strings.TrimPrefix(env["ENVGATE_CLUSTER_ADVERTISE"], "$(POD_IP)") {
		t.Errorf("listen.http %s is not the advertised port", cfg.Listen.HTTP)
	}
	volumes := map[string]k8sDoc{}
	for _, v := range ds.at("spec.template.spec.volumes").([]any) {
		v := k8sDoc(v.(map[string]any))
		volumes[v.str("name")] = v
	}
	mounts := map[string]k8sDoc{}
	for _, m := range c.at("volumeMounts").([]any) {
		m := k8sDoc(m.(map[string]any))
		mounts[m.str("mountPath")] = m
	}
	state := mounts[cfg.StateDir]
	if state == nil || volumes[state.str("name")].str("persistentVolumeClaim.claimName") != pvc.str("metadata.name") {
		t.Errorf("state_dir %s is not the shared claim %s", cfg.StateDir, pvc.str("metadata.name"))
	}
	if fmt.Sprint(pvc.at("spec.accessModes")) != "[ReadWriteMany]" {
		t.Errorf("the shared claim's access modes %v: want ReadWriteMany", pvc.at("spec.accessModes"))
	}
	secret := mounts[filepath.Dir(cfg.Cluster.SecretFile)]
	if secret == nil || volumes[secret.str("name")].str("secret.secretName") == "" {
		t.Errorf("cluster.secret_file %s is not in a mounted Secret", cfg.Cluster.SecretFile)
	}
	if a, _ := ing.at("metadata.annotations").(map[string]any); a["nginx.ingress.kubernetes.io/upstream-hash-by"] != "$host" {
		t.Errorf("Ingress annotations %v: want upstream-hash-by $host", a)
	}
}
