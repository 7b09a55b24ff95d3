/* fastnn's runtime: build facts, threads (fastnn's OpenMP team runs the BLAS's jobs too),
   when to split a product, and the batch gather.  See fastnn.h. */
#define _GNU_SOURCE
#include "runtime.h"

#ifdef _OPENMP
#include <pthread.h>
#endif
#ifdef __linux__
#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <unistd.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

extern void scipy_openblas_set_num_threads(int);
extern int scipy_openblas_get_num_threads(void);
extern char *scipy_openblas_get_config(void);

int64_t fnn_row_blocks(int64_t m, int64_t n, int64_t k) {
    const double mnk = (double)m * (double)n * (double)k;
    const int threads = fnn_team_max();
    if (threads < 2 || mnk < FNN_SPLIT_MIN_MNK || mnk > FNN_SPLIT_MAX_MNK) return 0;
    int64_t blocks = threads;
    while (mnk / (double)blocks > FNN_BLAS_SERIAL_MNK) blocks += threads;
    return blocks <= m ? blocks : 0;
}

/* The BLAS's count: the one fastnn's caller wants (set_num_threads, or the BLAS's own count
   from its environment, or one set from outside fastnn, e.g. by threadpoolctl, adopted when
   seen), and the one fastnn set it to (the wanted count under the same caps as the team).
   No kernel changes it otherwise: products that run one per thread use fnn_matmul_forward. */
static int fnn_blas_wanted = 1;
static int fnn_blas_applied = -1; /* -1: not set by fastnn yet */
#ifdef _OPENMP
static omp_lock_t fnn_blas_lock;
#define FNN_BLAS_LOCK omp_set_lock(&fnn_blas_lock)
#define FNN_BLAS_UNLOCK omp_unset_lock(&fnn_blas_lock)
#else
#define FNN_BLAS_LOCK
#define FNN_BLAS_UNLOCK
#endif

#ifdef _OPENMP
/* OpenBLAS runs its parallel jobs on fastnn's OpenMP team instead of its own pthreads:
   one owner of threads (no OpenMP and BLAS pools competing for the cores), and each job
   runs with subnormals flushed (FTZ|DAZ; a GEMM on subnormal inputs is ~150x slower).
   OpenBLAS's jobs may wait on each other, so each one gets a thread of its own. */
struct fnn_blas_job {
    openblas_dojob_callback dojob;
    int i, dojob_data;
    void *data;
};

static void *fnn_blas_job_run(void *arg) {
    struct fnn_blas_job *job = (struct fnn_blas_job *)arg;
    FNN_CSR_SAVE
    job->dojob(job->i, job->data, job->dojob_data);
    FNN_CSR_RESTORE
    return NULL;
}

static void fnn_blas_threads(int sync, openblas_dojob_callback dojob, int numjobs,
                             size_t jobdata_elsize, void *jobdata, int dojob_data) {
    (void)sync;
    if (numjobs <= 64 && (numjobs > omp_get_thread_limit() ||
                          omp_get_active_level() >= omp_get_max_active_levels())) {
        /* Called from inside a parallel region (or past the thread limit), OpenMP would hand
           us fewer threads than jobs, and jobs waiting on each other in one thread would
           never finish: give each job a thread of its own instead (slow, but correct). */
        pthread_t tid[64];
        struct fnn_blas_job job[64];
        int started[64] = {0};
        for (int i = 0; i < numjobs; i++)
            job[i] = (struct fnn_blas_job){dojob, i, dojob_data,
                                           (char *)jobdata + (size_t)i * jobdata_elsize};
        for (int i = 1; i < numjobs; i++)
            started[i] = pthread_create(&tid[i], NULL, fnn_blas_job_run, &job[i]) == 0;
        fnn_blas_job_run(&job[0]);
        for (int i = 1; i < numjobs; i++) {
            if (started[i])
                pthread_join(tid[i], NULL);
            else
                fnn_blas_job_run(&job[i]); /* could not start a thread: last resort */
        }
        return;
    }
#pragma omp parallel num_threads(numjobs)
    {
        FNN_CSR_SAVE
        for (int i = omp_get_thread_num(); i < numjobs; i += omp_get_num_threads())
            dojob(i, (char *)jobdata + (size_t)i * jobdata_elsize, dojob_data);
        FNN_CSR_RESTORE
    }
}
#endif

/* ---- threads ------------------------------------------------------------------------------
   The count asked for, for every thread of the process (OpenMP's own setting is per thread);
   the CPUs this process may use; whether FASTNN_ALLOW_OVERSUBSCRIPTION=1 lifts the cap (and the
   monitor); and the monitor's ceiling on the team (see fnn_team_now in runtime.h). */
static int fnn_threads = 1, fnn_cpus = 1, fnn_limit = 1 << 30; /* atomic accesses */
static int fnn_oversubscribe = 0;
#define FNN_LOAD(v) __atomic_load_n(&(v), __ATOMIC_RELAXED)
#define FNN_STORE(v, x) __atomic_store_n(&(v), (x), __ATOMIC_RELAXED)
/* Set in a child process forked after fastnn was loaded: GNU OpenMP's thread pool does not
   survive fork (the child's first parallel region would wait forever for the parent's
   threads), so the child runs fastnn's loops on one thread and the BLAS on its own threads. */
static volatile int fnn_forked = 0;

#ifdef __linux__
/* The smallest cgroup v2 CPU quota (cpu.max: "quota period", or "max") from this process's
   cgroup up to the root, rounded up to whole CPUs; 0 if none or unreadable. */
static int fnn_cgroup_cpus(void) {
    char rel[1024] = "", line[1024], path[1100];
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f) return 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "0::", 3) == 0) {
            snprintf(rel, sizeof rel, "%s", line + 3);
            rel[strcspn(rel, "\n")] = 0;
            break;
        }
    fclose(f);
    if (rel[0] != '/') return 0;
    int best = 0;
    for (;;) {
        snprintf(path, sizeof path, "/sys/fs/cgroup%s/cpu.max", strcmp(rel, "/") ? rel : "");
        if ((f = fopen(path, "r"))) {
            long long quota, period;
            if (fscanf(f, "%lld %lld", &quota, &period) == 2 && quota > 0 && period > 0) {
                const int c = (int)((quota + period - 1) / period);
                if (!best || c < best) best = c;
            }
            fclose(f);
        }
        char *slash = strrchr(rel, '/');
        if (!slash || slash == rel) break;
        *slash = 0;
    }
    return best;
}
#endif

#ifdef __linux__
/* The CPUs this process may use, into set (0 if unknown): this thread's affinity mask, and under
   OpenMP binding (OMP_PROC_BIND, OMP_PLACES, GOMP_CPU_AFFINITY) every place's CPUs, as libgomp
   has already pinned this thread to one place and puts the team on the others. */
static int fnn_cpu_set(cpu_set_t *set) {
    if (sched_getaffinity(0, sizeof *set, set) != 0) return 0;
#ifdef _OPENMP
    if (omp_get_proc_bind() != omp_proc_bind_false) {
        int ids[CPU_SETSIZE];
        for (int p = 0; p < omp_get_num_places(); p++) {
            const int k = omp_get_place_num_procs(p);
            if (k < 1 || k > CPU_SETSIZE) continue;
            omp_get_place_proc_ids(p, ids);
            for (int i = 0; i < k; i++)
                if (ids[i] >= 0 && ids[i] < CPU_SETSIZE) CPU_SET(ids[i], set);
        }
    }
#endif
    return 1;
}
#endif

/* CPUs this process may use: its affinity mask (fnn_cpu_set), and a cgroup v2 quota (a
   container's --cpus). */
static int fnn_count_cpus(void) {
    int n = 0;
#ifdef __linux__
    cpu_set_t set;
    if (fnn_cpu_set(&set)) n = CPU_COUNT(&set);
    const int q = fnn_cgroup_cpus();
#else
    const int q = 0;
#endif
#ifdef _OPENMP
    if (n < 1) n = omp_get_num_procs();
#endif
    if (q > 0 && (n < 1 || q < n)) n = q;
    return n < 1 ? 1 : n;
}

int fnn_team_max(void) {
#ifdef _OPENMP
    if (fnn_forked) return 1;
    const int n = FNN_LOAD(fnn_threads), c = FNN_LOAD(fnn_cpus);
    return !fnn_oversubscribe && n > c ? c : n;
#else
    return 1;
#endif
}

/* ---- the BLAS's count (lock held) ---- */

static int fnn_blas_target(void) {
    int n = fnn_blas_wanted;
    if (!fnn_oversubscribe) {
        const int l = FNN_LOAD(fnn_limit), c = FNN_LOAD(fnn_cpus);
        n = n > c ? c : n;
        n = n > l ? l : n;
    }
    return n < 1 ? 1 : n;
}

/* A count someone set from outside fastnn since fastnn last set one becomes the wanted one. */
static void fnn_blas_adopt(void) {
    if (fnn_blas_applied < 0) return;
    const int cur = scipy_openblas_get_num_threads();
    if (cur != fnn_blas_applied) fnn_blas_wanted = cur;
}

static void fnn_blas_apply(void) {
    const int t = fnn_blas_target();
    if (scipy_openblas_get_num_threads() != t) scipy_openblas_set_num_threads(t);
    __atomic_store_n(&fnn_blas_applied, t, __ATOMIC_RELAXED);
}

/* ---- the contention monitor -------------------------------------------------------------
   A thread descheduled in the middle of a region holds the whole team at the region's end
   (static shares, libgomp's barriers spin, OpenBLAS's jobs wait on each other): with one of two
   cores busy elsewhere, the book epoch took 2-38 s at two threads against 1 s at one.  So at
   most every FNN_MON_PERIOD_NS, the thread opening a region (or calling a threaded BLAS) reads
   how long this process's threads waited for a core (run-queue delay, summed over
   /proc/self/task/<tid>/schedstat, in ns).  Waiting more than FNN_MON_SHRINK cores' worth in two
   windows in a row (FNN_MON_SHRINK_NOW in one), the team gives up that many threads (rounded,
   at least one; never fewer than one).  Measured on the book epoch against a process busy a
   fraction of every 10 ms: at 25% two threads still beat one (0.68 vs 0.95 s; the waiting was
   ~0.2 core), at 50% they tie (~0.4), at 75% one wins (~0.55), at 100% by 8-20x (~1.0).
   While the team is smaller than P, it grows by one thread per idle core once the CPUs of the
   affinity mask were idle FNN_MON_GROW cores' worth over a growth window (/proc/stat):
   FNN_MON_GROW_NS, doubled (up to 32 x) each time the team shrinks again soon after growing (a
   load that comes and goes), back to one window when a shrink comes long after.  A sample costs
   ~15 us of CPU per thread of the process; the period stretches to keep it under 0.1%. */
#define FNN_MON_PERIOD_NS 50000000LL /* 50 ms */
#define FNN_MON_SHRINK 0.35
#define FNN_MON_SHRINK_NOW 0.75
#define FNN_MON_GROW 0.6
#define FNN_MON_GROW_NS 250000000LL
#define FNN_MON_GROW_MAX_NS 8000000000LL

#ifdef __linux__
static struct {
    int on;                   /* /proc readable */
    int busy;                 /* one sampling thread at a time (atomic) */
    int64_t next;             /* when to sample next (atomic) */
    int64_t period;           /* FNN_MON_PERIOD_NS, or more where reading costs more */
    int64_t t0, wait0;        /* this window: start, our threads' summed run-queue delay */
    int64_t gt0;              /* the growth window: start, idle CPU time of the mask (ns) */
    int64_t idle0;
    int64_t grow_ns;          /* the growth window's length */
    int64_t grown_at;         /* when the team last grew (0: never) */
    int strikes;              /* windows in a row over FNN_MON_SHRINK */
} fnn_mon;

static int64_t fnn_now_ns(clockid_t c) {
    struct timespec ts = {0, 0};
    clock_gettime(c, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Small reads of /proc files, without stdio. */
static ssize_t fnn_read_file(const char *path, char *buf, size_t size) {
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n >= 0) buf[n] = 0;
    return n;
}

/* The summed run-queue delay (ns) of every thread of this process, or -1. */
static int64_t fnn_mon_waits(void) {
    DIR *d = opendir("/proc/self/task");
    if (!d) return -1;
    int64_t sum = 0;
    int seen = 0;
    struct dirent *e;
    char path[64], buf[128];
    while ((e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
        snprintf(path, sizeof path, "/proc/self/task/%.20s/schedstat", e->d_name);
        if (fnn_read_file(path, buf, sizeof buf) <= 0) continue; /* the thread just ended */
        unsigned long long run, wait;
        if (sscanf(buf, "%llu %llu", &run, &wait) == 2) {
            sum += (int64_t)wait;
            seen++;
        }
    }
    closedir(d);
    return seen ? sum : -1;
}

/* Idle time (ns) of the CPUs in the affinity mask, from /proc/stat (idle + iowait), or -1. */
static int64_t fnn_mon_idle(void) {
    static char buf[1 << 16];
    const ssize_t n = fnn_read_file("/proc/stat", buf, sizeof buf);
    if (n <= 0) return -1;
    const long hz = sysconf(_SC_CLK_TCK);
    cpu_set_t set;
    const int masked = fnn_cpu_set(&set);
    int64_t ticks = 0;
    int seen = 0;
    for (char *line = buf; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : 0) {
        if (strncmp(line, "cpu", 3) || line[3] < '0' || line[3] > '9') continue;
        int cpu;
        unsigned long long user, nice, sys, idle, iowait;
        if (sscanf(line + 3, "%d %llu %llu %llu %llu %llu", &cpu, &user, &nice, &sys, &idle,
                   &iowait) != 6)
            continue;
        if (masked && (cpu < 0 || cpu >= CPU_SETSIZE || !CPU_ISSET(cpu, &set)))
            continue;
        ticks += (int64_t)(idle + iowait);
        seen++;
    }
    return seen && hz > 0 ? ticks * (1000000000LL / hz) : -1;
}

static void fnn_mon_start(void) {
    const int64_t now = fnn_now_ns(CLOCK_MONOTONIC), t = fnn_now_ns(CLOCK_THREAD_CPUTIME_ID);
    fnn_mon.wait0 = fnn_mon_waits();
    const int64_t cost = fnn_now_ns(CLOCK_THREAD_CPUTIME_ID) - t;
    fnn_mon.on = fnn_mon.wait0 >= 0 && fnn_mon_idle() >= 0;
    fnn_mon.period = cost * 1000 > FNN_MON_PERIOD_NS ? cost * 1000 : FNN_MON_PERIOD_NS;
    fnn_mon.t0 = fnn_mon.gt0 = now;
    fnn_mon.grow_ns = FNN_MON_GROW_NS;
    fnn_mon.grown_at = 0;
    __atomic_store_n(&fnn_mon.next, now + fnn_mon.period, __ATOMIC_RELAXED);
}

static void fnn_set_limit(int l) {
    FNN_STORE(fnn_limit, l);
    FNN_BLAS_LOCK;
    fnn_blas_apply();
    FNN_BLAS_UNLOCK;
}

static void fnn_mon_sample(void) {
    const int64_t now = fnn_now_ns(CLOCK_MONOTONIC), el = now - fnn_mon.t0;
    const int64_t t = fnn_now_ns(CLOCK_THREAD_CPUTIME_ID), wait = fnn_mon_waits();
    const int64_t cost = fnn_now_ns(CLOCK_THREAD_CPUTIME_ID) - t; /* CPU time: not our waits */
    if (wait < 0 || el <= 0) return;
    const double waiting = (double)(wait - fnn_mon.wait0) / (double)el; /* cores' worth */
    const int p = fnn_team_max(), limit = FNN_LOAD(fnn_limit);
    const int team = limit < p ? limit : p;
    const int strike = team > 1 && waiting > FNN_MON_SHRINK;
    fnn_mon.strikes = strike ? fnn_mon.strikes + 1 : 0;
    if (strike && (waiting > FNN_MON_SHRINK_NOW || fnn_mon.strikes >= 2)) {
        fnn_mon.strikes = 0;
        int drop = (int)(waiting + 0.5);
        drop = drop < 1 ? 1 : drop;
        fnn_set_limit(team - drop > 1 ? team - drop : 1);
        if (fnn_mon.grown_at && now - fnn_mon.grown_at < 4 * fnn_mon.grow_ns)
            fnn_mon.grow_ns = 2 * fnn_mon.grow_ns < FNN_MON_GROW_MAX_NS ? 2 * fnn_mon.grow_ns
                                                                         : FNN_MON_GROW_MAX_NS;
        else
            fnn_mon.grow_ns = FNN_MON_GROW_NS;
        fnn_mon.gt0 = now;
        fnn_mon.idle0 = fnn_mon_idle();
    } else if (limit < p && now - fnn_mon.gt0 >= fnn_mon.grow_ns) {
        const int64_t idle = fnn_mon_idle();
        if (idle >= 0 && fnn_mon.idle0 >= 0) {
            const double cores = (double)(idle - fnn_mon.idle0) / (double)(now - fnn_mon.gt0);
            if (cores >= FNN_MON_GROW) {
                const int l = limit + (int)(cores + 1.0 - FNN_MON_GROW);
                fnn_set_limit(l >= FNN_LOAD(fnn_cpus) ? 1 << 30 : l);
                fnn_mon.grown_at = now;
            }
        }
        fnn_mon.gt0 = now;
        fnn_mon.idle0 = idle;
    }
    fnn_mon.t0 = now;
    fnn_mon.wait0 = wait;
    fnn_mon.period = cost * 1000 > FNN_MON_PERIOD_NS ? cost * 1000 : FNN_MON_PERIOD_NS;
    __atomic_store_n(&fnn_mon.next, now + fnn_mon.period, __ATOMIC_RELAXED);
}

/* A sample when one is due (a clock read otherwise), by one thread at a time. */
static void fnn_mon_tick(void) {
    if (fnn_now_ns(CLOCK_MONOTONIC_COARSE) >= __atomic_load_n(&fnn_mon.next, __ATOMIC_RELAXED) &&
        !__atomic_exchange_n(&fnn_mon.busy, 1, __ATOMIC_ACQUIRE)) {
        fnn_mon_sample();
        __atomic_store_n(&fnn_mon.busy, 0, __ATOMIC_RELEASE);
    }
}
#endif

int fnn_team_now(void) {
    const int p = fnn_team_max();
#ifdef __linux__
    if (p < 2 || fnn_oversubscribe || !fnn_mon.on) return p;
    fnn_mon_tick();
    const int l = FNN_LOAD(fnn_limit);
    return l < p ? l : p;
#else
    return p;
#endif
}

void fnn_blas_check(void) {
#ifdef __linux__
    if (fnn_mon.on && !fnn_oversubscribe && fnn_team_max() > 1) fnn_mon_tick(); /* BLAS work too */
#endif
    if (scipy_openblas_get_num_threads() == __atomic_load_n(&fnn_blas_applied, __ATOMIC_RELAXED))
        return;
    FNN_BLAS_LOCK;
    fnn_blas_adopt();
    fnn_blas_apply();
    FNN_BLAS_UNLOCK;
}

#ifdef _OPENMP
static void fnn_after_fork_in_child(void) {
    fnn_forked = 1;
    FNN_STORE(fnn_limit, 1 << 30); /* the parent's load: the child has no monitor */
#ifdef __linux__
    fnn_mon.busy = 0;
#endif
    omp_init_lock(&fnn_blas_lock); /* it may have been held by another parent thread */
    scipy_openblas_set_threads_callback_function(NULL);
}
#endif

void fnn_init(void) {
    const char *over = getenv("FASTNN_ALLOW_OVERSUBSCRIPTION");
    fnn_oversubscribe = over && strcmp(over, "1") == 0;
    FNN_STORE(fnn_cpus, fnn_count_cpus());
#ifdef _OPENMP
    omp_init_lock(&fnn_blas_lock);
    FNN_STORE(fnn_threads, omp_get_max_threads());
    /* Only where OpenMP promises full teams: with OMP_DYNAMIC or a thread limit below the
       core count the BLAS keeps its own threads. */
    if (!omp_get_dynamic() && omp_get_thread_limit() >= omp_get_num_procs())
        scipy_openblas_set_threads_callback_function(fnn_blas_threads);
    pthread_atfork(NULL, NULL, fnn_after_fork_in_child);
#endif
#ifdef __linux__
    fnn_mon_start();
#endif
    FNN_BLAS_LOCK;
    fnn_blas_wanted = scipy_openblas_get_num_threads(); /* its own, from its environment */
    fnn_blas_apply();
    FNN_BLAS_UNLOCK;
}

int fnn_forked_child(void) { return fnn_forked; }

int fnn_have_openmp(void) {
#ifdef _OPENMP
    return _OPENMP;
#else
    return 0;
#endif
}

const char *fnn_simd_targets(void) { return FNN_SIMD_TARGETS; }

void fnn_set_num_threads(int n) {
    if (n < 1) n = 1;
    FNN_STORE(fnn_threads, n);
    FNN_STORE(fnn_cpus, fnn_count_cpus()); /* the affinity mask may have changed (taskset -p) */
    FNN_BLAS_LOCK;
    fnn_blas_wanted = n;
    fnn_blas_apply();
    FNN_BLAS_UNLOCK;
}

int fnn_get_num_threads(void) { return fnn_team_max(); } /* the team's size: P, runtime.h */

int fnn_blas_get_num_threads(void) { /* the caller's count */
    FNN_BLAS_LOCK;
    fnn_blas_adopt();
    const int n = fnn_blas_wanted;
    FNN_BLAS_UNLOCK;
    return n;
}

const char *fnn_blas_config(void) { return scipy_openblas_get_config(); }

/* Rows are copied by the whole team past FNN_GATHER_PAR_BYTES (runtime.h; measured on MNIST
   batches: 79 us on one thread, 23 on two). */
void fnn_gather_forward_u8(void *out, const void *x, const int64_t *idx, int64_t n,
                           int64_t row_bytes) {
    char *o = (char *)out;
    const char *src = (const char *)x;
    const int threads = n * row_bytes >= FNN_GATHER_PAR_BYTES ? fnn_team_now() : 1;
    (void)threads;
#pragma omp parallel for schedule(static) if (threads > 1) num_threads(threads)
    for (int64_t i = 0; i < n; i++) {
        if (i + FNN_GATHER_AHEAD < n)
            fnn_prefetch_row(src + idx[i + FNN_GATHER_AHEAD] * row_bytes, row_bytes);
        memcpy(o + i * row_bytes, src + idx[i] * row_bytes, (size_t)row_bytes);
    }
}
