//go:build cgo && linux

// The C fast path of envgate-init: what package
// lifecycle/devserver/trampoline does (trampoline.go, init.go, fence.go),
// run from a constructor before the Go runtime starts, as runc's nsexec
// does. An isolated env's init then stays a single-threaded C process for
// the env's whole life: no runtime start at each env start (about 2.5 ms of
// CPU on a loaded machine), and an idle init never wakes up (the Go
// runtime's threads, timers and GC are never started).
//
// It reads the same Spec (JSON in ENVGATE_EXEC_SPEC) and does the same, in
// the same order, with the same messages on the dev server's output.
// Anything it does not understand in the Spec (a key it does not know,
// JSON it cannot parse) leaves it to the Go path: the constructor returns,
// the variable still set, and main calls trampoline.Run. Keep the two in
// step: the tests run the isolation tests with either
// (lifecycle/devserver's buildInit, TestFastPathMatchesGo).

#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define ENV_VAR "ENVGATE_EXEC_SPEC" // trampoline.EnvVar
#define FENCE_POLL_MS 100           // trampoline's fencePoll

// ---- the Spec -------------------------------------------------------------

struct strs {
	char **v;
	int n;
};

struct bindm {
	char *source, *content, *target;
};

struct spec {
	char *path;
	int nnp, init;
	struct strs cgroups, keep, hide, unset;
	struct {
		int r;
		unsigned long long max;
	} rl[32];
	int nrl;
	int has_cred;
	unsigned long long uid, gid;
	long long tmp_size;
	struct bindm *binds;
	int nbinds;
	int has_fence;
	char *fdir, *fenv;
	long long ftoken;
};

// A JSON reader for the Spec's shape: objects, arrays, strings, integers,
// booleans, null. Each function returns 0 on success, -1 on anything else.
struct rd {
	const char *p;
};

static void ws(struct rd *r) {
	while (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')
		r->p++;
}

static int lit(struct rd *r, char c) {
	ws(r);
	if (*r->p != c)
		return -1;
	r->p++;
	return 0;
}

static int peek(struct rd *r, char c) {
	ws(r);
	return *r->p == c;
}

static int hex4(const char *p, unsigned *out) {
	unsigned v = 0;
	for (int i = 0; i < 4; i++) {
		char c = p[i];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= c - '0';
		else if (c >= 'a' && c <= 'f')
			v |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v |= c - 'A' + 10;
		else
			return -1;
	}
	*out = v;
	return 0;
}

static int str(struct rd *r, char **out) {
	if (lit(r, '"'))
		return -1;
	size_t cap = strlen(r->p) + 1;
	char *b = malloc(cap), *w = b;
	if (!b)
		return -1;
	for (;;) {
		unsigned char c = (unsigned char)*r->p++;
		if (c == '"')
			break;
		if (c == 0 || c < 0x20) {
			free(b);
			return -1;
		}
		if (c != '\\') {
			*w++ = (char)c;
			continue;
		}
		c = (unsigned char)*r->p++;
		switch (c) {
		case '"': *w++ = '"'; break;
		case '\\': *w++ = '\\'; break;
		case '/': *w++ = '/'; break;
		case 'b': *w++ = '\b'; break;
		case 'f': *w++ = '\f'; break;
		case 'n': *w++ = '\n'; break;
		case 'r': *w++ = '\r'; break;
		case 't': *w++ = '\t'; break;
		case 'u': {
			unsigned u, lo;
			if (hex4(r->p, &u)) {
				free(b);
				return -1;
			}
			r->p += 4;
			if (u >= 0xd800 && u < 0xdc00 && r->p[0] == '\\' && r->p[1] == 'u' && hex4(r->p + 2, &lo) == 0 &&
			    lo >= 0xdc00 && lo < 0xe000) {
				u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
				r->p += 6;
			} else if (u >= 0xd800 && u < 0xe000) {
				u = 0xfffd; // a lone surrogate, as Go decodes it
			}
			if (u == 0) { // a NUL cannot be in a C string: the Go path
				free(b);
				return -1;
			}
			if (u < 0x80) {
				*w++ = (char)u;
			} else if (u < 0x800) {
				*w++ = (char)(0xc0 | u >> 6);
				*w++ = (char)(0x80 | (u & 0x3f));
			} else if (u < 0x10000) {
				*w++ = (char)(0xe0 | u >> 12);
				*w++ = (char)(0x80 | (u >> 6 & 0x3f));
				*w++ = (char)(0x80 | (u & 0x3f));
			} else {
				*w++ = (char)(0xf0 | u >> 18);
				*w++ = (char)(0x80 | (u >> 12 & 0x3f));
				*w++ = (char)(0x80 | (u >> 6 & 0x3f));
				*w++ = (char)(0x80 | (u & 0x3f));
			}
			break;
		}
		default:
			free(b);
			return -1;
		}
	}
	*w = 0;
	*out = b;
	return 0;
}

// num reads an integer; neg says whether it may be negative.
static int num(struct rd *r, int neg, long long *s, unsigned long long *u) {
	ws(r);
	int minus = 0;
	if (*r->p == '-') {
		if (!neg)
			return -1;
		minus = 1;
		r->p++;
	}
	if (*r->p < '0' || *r->p > '9')
		return -1;
	unsigned long long v = 0;
	while (*r->p >= '0' && *r->p <= '9') {
		unsigned d = (unsigned)(*r->p++ - '0');
		if (v > (ULLONG_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	if (*r->p == '.' || *r->p == 'e' || *r->p == 'E')
		return -1;
	if (u)
		*u = v;
	if (s) {
		if (v > (unsigned long long)LLONG_MAX)
			return -1;
		*s = minus ? -(long long)v : (long long)v;
	}
	return 0;
}

static int boolean(struct rd *r, int *out) {
	ws(r);
	if (strncmp(r->p, "true", 4) == 0) {
		r->p += 4;
		*out = 1;
		return 0;
	}
	if (strncmp(r->p, "false", 5) == 0) {
		r->p += 5;
		*out = 0;
		return 0;
	}
	return -1;
}

// null reads a JSON null if there is one (a nil slice or pointer).
static int null(struct rd *r) {
	ws(r);
	if (strncmp(r->p, "null", 4) == 0) {
		r->p += 4;
		return 1;
	}
	return 0;
}

static int strlist(struct rd *r, struct strs *out) {
	if (null(r))
		return 0;
	if (lit(r, '['))
		return -1;
	if (peek(r, ']'))
		return lit(r, ']');
	for (;;) {
		char *s;
		if (str(r, &s))
			return -1;
		char **v = realloc(out->v, sizeof(char *) * (out->n + 1));
		if (!v)
			return -1;
		out->v = v;
		out->v[out->n++] = s;
		if (peek(r, ','))
			lit(r, ',');
		else
			return lit(r, ']');
	}
}

// object calls field for each key of an object.
static int object(struct rd *r, void *ctx, int (*field)(struct rd *, const char *, void *)) {
	if (lit(r, '{'))
		return -1;
	if (peek(r, '}'))
		return lit(r, '}');
	for (;;) {
		char *k;
		if (str(r, &k) || lit(r, ':'))
			return -1;
		int err = field(r, k, ctx);
		free(k);
		if (err)
			return -1;
		if (peek(r, ','))
			lit(r, ',');
		else
			return lit(r, '}');
	}
}

static int rlimit_field(struct rd *r, const char *k, void *ctx) {
	struct spec *sp = ctx;
	long long v;
	if (strcmp(k, "r") == 0) {
		if (num(r, 0, &v, NULL))
			return -1;
		sp->rl[sp->nrl].r = (int)v;
		return 0;
	}
	if (strcmp(k, "max") == 0)
		return num(r, 0, NULL, &sp->rl[sp->nrl].max);
	return -1;
}

static int cred_field(struct rd *r, const char *k, void *ctx) {
	struct spec *sp = ctx;
	unsigned long long *f = strcmp(k, "uid") == 0 ? &sp->uid : strcmp(k, "gid") == 0 ? &sp->gid : NULL;
	if (!f || num(r, 0, NULL, f) || *f > UINT32_MAX)
		return -1;
	return 0;
}

static int bind_field(struct rd *r, const char *k, void *ctx) {
	struct bindm *b = ctx;
	char **f = strcmp(k, "source") == 0    ? &b->source
	           : strcmp(k, "content") == 0 ? &b->content
	           : strcmp(k, "target") == 0  ? &b->target
	                                       : NULL;
	if (!f)
		return -1;
	free(*f);
	return str(r, f);
}

static int fence_field(struct rd *r, const char *k, void *ctx) {
	struct spec *sp = ctx;
	if (strcmp(k, "dir") == 0)
		return str(r, &sp->fdir);
	if (strcmp(k, "env") == 0)
		return str(r, &sp->fenv);
	if (strcmp(k, "token") == 0)
		return num(r, 1, &sp->ftoken, NULL);
	return -1;
}

static int spec_field(struct rd *r, const char *k, void *ctx) {
	struct spec *sp = ctx;
	if (strcmp(k, "path") == 0)
		return str(r, &sp->path);
	if (strcmp(k, "nnp") == 0)
		return boolean(r, &sp->nnp);
	if (strcmp(k, "init") == 0)
		return boolean(r, &sp->init);
	if (strcmp(k, "cgroups") == 0)
		return strlist(r, &sp->cgroups);
	if (strcmp(k, "keep") == 0)
		return strlist(r, &sp->keep);
	if (strcmp(k, "hide") == 0)
		return strlist(r, &sp->hide);
	if (strcmp(k, "unset") == 0)
		return strlist(r, &sp->unset);
	if (strcmp(k, "tmp_size") == 0)
		return num(r, 1, &sp->tmp_size, NULL);
	if (strcmp(k, "cred") == 0) {
		if (null(r))
			return 0;
		sp->has_cred = 1;
		return object(r, sp, cred_field);
	}
	if (strcmp(k, "fence") == 0) {
		if (null(r))
			return 0;
		sp->has_fence = 1;
		if (object(r, sp, fence_field) || !sp->fdir || !sp->fenv)
			return -1;
		return 0;
	}
	if (strcmp(k, "rlimits") == 0) {
		if (null(r))
			return 0;
		if (lit(r, '['))
			return -1;
		if (peek(r, ']'))
			return lit(r, ']');
		for (;;) {
			if (sp->nrl == (int)(sizeof sp->rl / sizeof sp->rl[0]))
				return -1;
			if (object(r, sp, rlimit_field))
				return -1;
			sp->nrl++;
			if (peek(r, ','))
				lit(r, ',');
			else
				return lit(r, ']');
		}
	}
	if (strcmp(k, "binds") == 0) {
		if (null(r))
			return 0;
		if (lit(r, '['))
			return -1;
		if (peek(r, ']'))
			return lit(r, ']');
		for (;;) {
			struct bindm *v = realloc(sp->binds, sizeof(struct bindm) * (sp->nbinds + 1));
			if (!v)
				return -1;
			sp->binds = v;
			memset(&v[sp->nbinds], 0, sizeof v[0]);
			if (object(r, &v[sp->nbinds], bind_field) || !v[sp->nbinds].target)
				return -1;
			sp->nbinds++;
			if (peek(r, ','))
				lit(r, ',');
			else
				return lit(r, ']');
		}
	}
	return -1; // a key this path does not know: the Go path's
}

// ---- failing as the Go path does -------------------------------------------

// golike is libc's text of an errno or a signal as Go spells it: a
// lower-case first letter, unless the word is an abbreviation ("I/O
// possible", "CPU time limit exceeded").
static const char *golike(const char *s) {
	static char buf[128];
	snprintf(buf, sizeof buf, "%s", s ? s : "unknown");
	if (buf[0] >= 'A' && buf[0] <= 'Z' && buf[1] >= 'a' && buf[1] <= 'z')
		buf[0] = (char)(buf[0] - 'A' + 'a');
	return buf;
}

// errstr is strerror as Go spells errno.
static const char *errstr(int e) { return golike(strerror(e)); }

static void kill_namespace(void);
static int fenced;

__attribute__((noreturn, format(printf, 2, 3))) static void fail(int code, const char *fmt, ...) {
	char msg[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	dprintf(2, "envgate: %s\n", msg);
	_exit(code);
}

// ---- fence.go ----------------------------------------------------------------

static int fence_dir = -1, fence_lock = -1;

// fence_name is Env+suffix in buf, or -1 (ENAMETOOLONG) rather than a
// truncated name, which would be another file.
static int fence_name(char *buf, size_t n, const struct spec *sp, const char *suffix) {
	if ((size_t)snprintf(buf, n, "%s%s", sp->fenv, suffix) >= n) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

static long long recorded(const struct spec *sp) {
	char name[PATH_MAX];
	if (fence_name(name, sizeof name, sp, ".token") < 0)
		return 0;
	int fd = openat(fence_dir, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	char b[33];
	ssize_t n = read(fd, b, 32);
	close(fd);
	if (n <= 0)
		return 0;
	b[n] = 0;
	char *p = b;
	while (is_space(*p))
		p++;
	char *end;
	errno = 0;
	long long v = strtoll(p, &end, 10);
	while (is_space(*end))
		end++;
	if (end == p || *end || (errno && errno != ERANGE))
		return 0; // as strconv.ParseInt's syntax error gives 0
	return v;     // out of range: LLONG_MAX or LLONG_MIN, as ParseInt's range error
}

static void take_fence(const struct spec *sp) {
	fence_dir = open(sp->fdir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fence_dir < 0)
		fail(126, "fence: open %s: %s", sp->fdir, errstr(errno));
	char name[PATH_MAX];
	fence_lock = fence_name(name, sizeof name, sp, ".lock");
	if (fence_lock == 0)
		fence_lock = openat(fence_dir, name, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
	if (fence_lock < 0)
		fail(126, "fence: open %s/%s.lock: %s", sp->fdir, sp->fenv, errstr(errno));
	int waiting = 0;
	for (;;) {
		long long tok = recorded(sp);
		if (tok > sp->ftoken)
			fail(126, "fence: a newer owner has claimed the env (token %lld, this start's %lld)", tok, sp->ftoken);
		if (flock(fence_lock, LOCK_EX | LOCK_NB) == 0)
			return;
		if (errno != EWOULDBLOCK && errno != EINTR)
			fail(126, "fence: lock %s/%s.lock: %s", sp->fdir, sp->fenv, errstr(errno));
		if (!waiting) {
			dprintf(2, "envgate: waiting for the previous owner's processes of env %s to stop (lock %s/%s.lock)\n",
			        sp->fenv, sp->fdir, sp->fenv);
			waiting = 1;
		}
		struct timespec ts = {0, FENCE_POLL_MS * 1000000L};
		nanosleep(&ts, NULL);
	}
}

static void kill_others(void) {
	if (getpid() == 1)
		kill(-1, SIGKILL);
}

static void kill_namespace(void) {
	kill_others();
	for (;;) {
		if (wait4(-1, NULL, 0, NULL) < 0 && errno != EINTR)
			return;
	}
}

// ---- init.go: the mounts ------------------------------------------------------

static int mkdir_all(const char *path) {
	char p[PATH_MAX];
	if (!*path) {
		errno = ENOENT; // as os.MkdirAll("")
		return -1;
	}
	if (snprintf(p, sizeof p, "%s", path) >= (int)sizeof p) {
		errno = ENAMETOOLONG;
		return -1;
	}
	for (char *s = p + 1;; s++) {
		if (*s == '/' || *s == 0) {
			char c = *s;
			*s = 0;
			struct stat st;
			if (mkdir(p, 0755) < 0 && errno != EEXIST)
				return -1;
			if (stat(p, &st) < 0)
				return -1;
			if (!S_ISDIR(st.st_mode)) {
				errno = ENOTDIR;
				return -1;
			}
			*s = c;
			if (c == 0)
				return 0;
		}
	}
}

// mount_point makes sure path exists as a directory or a file to mount on.
static void mount_point(const char *path, int dir) {
	if (dir) {
		if (mkdir_all(path) < 0)
			fail(126, "isolate: mkdir %s: %s", path, errstr(errno));
		return;
	}
	char d[PATH_MAX];
	if (snprintf(d, sizeof d, "%s", path) >= (int)sizeof d)
		fail(126, "isolate: mkdir %s: %s", path, errstr(ENAMETOOLONG));
	char *slash = strrchr(d, '/');
	if (slash && slash != d) {
		*slash = 0;
		if (mkdir_all(d) < 0)
			fail(126, "isolate: mkdir %s: %s", d, errstr(errno));
	}
	int fd = open(path, O_CREAT | O_RDONLY | O_CLOEXEC, 0644);
	if (fd < 0)
		fail(126, "isolate: open %s: %s", path, errstr(errno));
	close(fd);
}

static void isolate_mounts(const struct spec *sp) {
	if (mount("", "/", "", MS_REC | MS_PRIVATE, "") < 0)
		fail(126, "isolate: make private /: %s", errstr(errno));
	for (int i = 0; i < sp->hide.n; i++) {
		const char *h = sp->hide.v[i];
		if (umount2(h, MNT_DETACH) < 0 && errno == EINVAL) {
			DIR *d = opendir(h);
			struct dirent *e;
			while (d && (e = readdir(d))) {
				if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
					continue;
				char p[PATH_MAX];
				if (snprintf(p, sizeof p, "%s/%s", h, e->d_name) < (int)sizeof p)
					umount2(p, MNT_DETACH);
			}
			if (d)
				closedir(d);
		}
	}
	int keep[sp->keep.n + 1], keepdir[sp->keep.n + 1];
	for (int i = 0; i < sp->keep.n; i++) {
		struct stat st;
		keep[i] = open(sp->keep.v[i], O_PATH | O_CLOEXEC);
		if (keep[i] < 0)
			fail(126, "isolate: open %s: %s", sp->keep.v[i], errstr(errno));
		if (fstat(keep[i], &st) < 0)
			fail(126, "isolate: stat %s: %s", sp->keep.v[i], errstr(errno));
		keepdir[i] = S_ISDIR(st.st_mode);
	}
	int binds[sp->nbinds + 1];
	for (int i = 0; i < sp->nbinds; i++) {
		binds[i] = -1;
		if (!sp->binds[i].source || !*sp->binds[i].source)
			continue;
		binds[i] = open(sp->binds[i].source, O_PATH | O_CLOEXEC);
		if (binds[i] < 0)
			fail(126, "isolate: open %s: %s", sp->binds[i].source, errstr(errno));
	}
	if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "") < 0)
		fail(126, "isolate: mount proc /proc: %s", errstr(errno));
	char opts[64];
	if (sp->tmp_size > 0)
		snprintf(opts, sizeof opts, "mode=1777,size=%lld", sp->tmp_size);
	else
		snprintf(opts, sizeof opts, "mode=1777");
	if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, opts) < 0)
		fail(126, "isolate: mount tmpfs /tmp: %s", errstr(errno));
	mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, opts);
	char src[64];
	for (int i = 0; i < sp->keep.n; i++) {
		mount_point(sp->keep.v[i], keepdir[i]);
		snprintf(src, sizeof src, "/proc/self/fd/%d", keep[i]);
		if (mount(src, sp->keep.v[i], "", MS_BIND | MS_REC, "") < 0)
			fail(126, "isolate: bind %s: %s", sp->keep.v[i], errstr(errno));
		close(keep[i]);
	}
	for (int i = 0; i < sp->nbinds; i++) {
		const struct bindm *b = &sp->binds[i];
		char own[64];
		const char *source = b->source;
		if (binds[i] < 0) {
			// ownFile: the env's own file on its new /tmp, root's, 0644.
			snprintf(own, sizeof own, "/tmp/.envgate-bind-%d", i);
			source = own;
			binds[i] = open(own, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0644);
			if (binds[i] < 0)
				fail(126, "isolate: create %s: %s", own, errstr(errno));
			const char *c = b->content ? b->content : "";
			size_t n = strlen(c);
			if (fchmod(binds[i], 0644) < 0)
				fail(126, "isolate: write %s: %s", own, errstr(errno));
			ssize_t w = write(binds[i], c, n);
			if (w < 0)
				fail(126, "isolate: write %s: %s", own, errstr(errno));
			if ((size_t)w < n)
				fail(126, "isolate: write %s: %s", own, errstr(EIO));
		}
		struct stat st;
		if (fstat(binds[i], &st) < 0)
			fail(126, "isolate: stat %s: %s", source, errstr(errno));
		mount_point(b->target, S_ISDIR(st.st_mode));
		snprintf(src, sizeof src, "/proc/self/fd/%d", binds[i]);
		if (mount(src, b->target, "", MS_BIND, "") < 0)
			fail(126, "isolate: bind %s %s: %s", source, b->target, errstr(errno));
		if (mount("", b->target, "", MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "") < 0)
			fail(126, "isolate: make read-only %s: %s", b->target, errstr(errno));
		close(binds[i]);
		if (source == own && unlink(own) < 0)
			fail(126, "isolate: remove %s: %s", own, errstr(errno));
	}
}

// ---- init.go: the init ----------------------------------------------------------

static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};

static long long now_ms(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

__attribute__((noreturn)) static void finish(int code) {
	if (fenced)
		kill_namespace();
	_exit(code);
}

__attribute__((noreturn)) static void run_init(const struct spec *sp, char **argv) {
	if (sp->has_fence) {
		take_fence(sp);
		fenced = 1;
	}
	isolate_mounts(sp);
	// Caught from before the dev server exists, read from a signalfd.
	sigset_t mask, old;
	sigemptyset(&mask);
	for (size_t i = 0; i < sizeof forwarded / sizeof forwarded[0]; i++)
		sigaddset(&mask, forwarded[i]);
	sigaddset(&mask, SIGCHLD);
	sigprocmask(SIG_BLOCK, &mask, &old);
	int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
	if (sfd < 0)
		fail(126, "signalfd: %s", errstr(errno));
	if (sp->nnp && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		fail(126, "no_new_privs: %s", errstr(errno));
	int ep[2];
	if (pipe2(ep, O_CLOEXEC) < 0)
		fail(127, "start %s: pipe: %s", sp->path, errstr(errno));
	pid_t child = fork();
	if (child < 0)
		fail(127, "start %s: fork/exec %s: %s", sp->path, sp->path, errstr(errno));
	if (child == 0) {
		// As os/exec's child: 0, 1 and 2 only, default signal mask, then
		// the env's user.
		int e = 0;
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		if (syscall(SYS_close_range, 3, ~0U, 4 /* CLOSE_RANGE_CLOEXEC */) < 0) {
			long max = sysconf(_SC_OPEN_MAX);
			for (long fd = 3; fd < (max > 0 ? max : 1024); fd++)
				fcntl((int)fd, F_SETFD, FD_CLOEXEC);
		}
		if (sp->has_cred && sp->uid != 0) {
			if (setgroups(0, NULL) < 0 || setgid((gid_t)sp->gid) < 0 || setuid((uid_t)sp->uid) < 0)
				e = errno;
		}
		if (!e) {
			execve(sp->path, argv, environ);
			e = errno;
		}
		(void)!write(ep[1], &e, sizeof e);
		_exit(127);
	}
	close(ep[1]);
	int e;
	ssize_t n;
	do
		n = read(ep[0], &e, sizeof e);
	while (n < 0 && errno == EINTR);
	close(ep[0]);
	if (n == sizeof e) {
		while (waitpid(child, NULL, 0) < 0 && errno == EINTR)
			;
		fail(127, "start %s: fork/exec %s: %s", sp->path, sp->path, errstr(e));
	}
	pid_t own = getpgrp();
	int watching = sp->has_fence;
	long long next = now_ms() + FENCE_POLL_MS;
	for (;;) {
		struct pollfd p = {.fd = sfd, .events = POLLIN};
		int timeout = -1;
		if (watching) {
			long long d = next - now_ms();
			timeout = d < 0 ? 0 : (int)d;
		}
		int r = poll(&p, 1, timeout);
		if (r < 0 && errno != EINTR) {
			int e = errno;
			if (fenced)
				kill_namespace(); // before the lock goes, as every way out
			fail(1, "poll: %s", errstr(e));
		}
		if (watching && now_ms() >= next) {
			next = now_ms() + FENCE_POLL_MS;
			long long tok = recorded(sp);
			if (tok > sp->ftoken) {
				dprintf(2, "envgate: env %s has a newer owner (token %lld, this run's %lld): stopping it\n", sp->fenv, tok,
				        sp->ftoken);
				kill_others();
				watching = 0;
			}
		}
		if (r <= 0)
			continue;
		struct signalfd_siginfo si[8];
		n = read(sfd, si, sizeof si);
		int chld = 0;
		for (ssize_t i = 0; n > 0 && i < n / (ssize_t)sizeof si[0]; i++) {
			int s = (int)si[i].ssi_signo;
			if (s == SIGCHLD) {
				chld = 1;
				continue;
			}
			// Passed on to a dev server that left the init's group.
			pid_t pg = getpgid(child);
			if (pg >= 0 && pg != own)
				kill(-pg, s);
		}
		if (!chld)
			continue;
		for (;;) {
			int ws;
			pid_t pid = wait4(-1, &ws, WNOHANG, NULL);
			if (pid == 0)
				break;
			if (pid < 0) {
				if (errno == EINTR)
					continue;
				int e = errno; // kill_namespace's own wait ends in ECHILD
				if (fenced)
					kill_namespace();
				fail(1, "wait: %s", errstr(e));
			}
			if (pid != child)
				continue; // an orphan, reaped
			if (WIFSIGNALED(ws)) {
				int s = WTERMSIG(ws);
				if (s != SIGTERM && s != SIGINT && s != SIGKILL) {
					if (fenced)
						kill_namespace();
					fail(128 + s, "dev server killed by signal %s", golike(strsignal(s)));
				}
				finish(128 + s);
			}
			finish(WEXITSTATUS(ws));
		}
	}
}

// ---- trampoline.go: Run ----------------------------------------------------------

__attribute__((constructor)) static void envgate_init_fastpath(int argc, char **argv, char **envp) {
	(void)argc;
	(void)envp;
	const char *s = getenv(ENV_VAR);
	if (!s || !*s || !argv || !argv[0])
		return; // not a trampoline: main says so
	struct spec sp;
	memset(&sp, 0, sizeof sp);
	struct rd r = {s};
	if (object(&r, &sp, spec_field) || (ws(&r), *r.p) || !sp.path)
		return; // the Go path reads it (and reports what is wrong)
	unsetenv(ENV_VAR);
	for (int i = 0; i < sp.unset.n; i++)
		unsetenv(sp.unset.v[i]);
	for (int i = 0; i < sp.cgroups.n; i++) {
		// "0" is the writing process itself.
		int fd = open(sp.cgroups.v[i], O_WRONLY | O_TRUNC | O_CLOEXEC);
		if (fd < 0)
			fail(126, "join cgroup: open %s: %s", sp.cgroups.v[i], errstr(errno));
		ssize_t w = write(fd, "0", 1);
		if (w != 1)
			fail(126, "join cgroup: write %s: %s", sp.cgroups.v[i], errstr(w < 0 ? errno : EIO));
		close(fd);
	}
	for (int i = 0; i < sp.nrl; i++) {
		struct rlimit l = {sp.rl[i].max, sp.rl[i].max}, cur;
		int err = setrlimit(sp.rl[i].r, &l) < 0 ? errno : 0;
		if (err == EPERM && getrlimit(sp.rl[i].r, &cur) == 0 && sp.rl[i].max > cur.rlim_max) {
			// Raising a hard limit takes CAP_SYS_RESOURCE: a limit above
			// the gateway's own is the gateway's.
			struct rlimit c = {cur.rlim_max, cur.rlim_max};
			err = setrlimit(sp.rl[i].r, &c) < 0 ? errno : 0;
		}
		if (err)
			fail(126, "rlimit %d: %s", sp.rl[i].r, errstr(err));
	}
	if (sp.init)
		run_init(&sp, argv);
	if (sp.nnp && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		fail(126, "no_new_privs: %s", errstr(errno));
	execve(sp.path, argv, environ);
	fail(127, "exec %s: %s", sp.path, errstr(errno));
}
