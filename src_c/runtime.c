/* fastnn's runtime: build facts, threads (fastnn's OpenMP team runs the BLAS's jobs too),
   serial BLAS sections, when to split a product, and the batch gather.  See fastnn.h. */
#define _GNU_SOURCE
#include "runtime.h"

#ifdef _OPENMP
#include <pthread.h>
#endif

extern void scipy_openblas_set_num_threads(int);
extern int scipy_openblas_get_num_threads(void);
extern char *scipy_openblas_get_config(void);

int64_t fnn_row_blocks(int64_t m, int64_t n, int64_t k) {
    const double mnk = (double)m * (double)n * (double)k;
    const int threads = fnn_get_num_threads();
    if (threads < 2 || mnk < FNN_SPLIT_MIN_MNK || mnk > FNN_SPLIT_MAX_MNK) return 0;
    int64_t blocks = threads;
    while (mnk / (double)blocks > FNN_BLAS_SERIAL_MNK) blocks += threads;
    return blocks <= m ? blocks : 0;
}

/* The BLAS's count as fastnn's caller set it; serial sections (below) hold the BLAS at one
   thread while any runs, then set this back. */
static int fnn_blas_threads_wanted = 0; /* 0: never set, leave the BLAS as it is */
static int fnn_blas_serial_depth = 0;
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

/* fastnn's team size, for every thread of the process (OpenMP's own setting is per thread). */
static int fnn_threads = 1;
/* Set in a child process forked after fastnn was loaded: GNU OpenMP's thread pool does not
   survive fork (the child's first parallel region would wait forever for the parent's
   threads), so the child runs fastnn's loops on one thread and the BLAS on its own threads. */
static volatile int fnn_forked = 0;

static void fnn_after_fork_in_child(void) {
    fnn_forked = 1;
    fnn_blas_serial_depth = 0; /* a section the parent was in does not go on in the child */
#ifdef _OPENMP
    omp_init_lock(&fnn_blas_lock); /* it may have been held by another parent thread */
    scipy_openblas_set_threads_callback_function(NULL);
#endif
}

void fnn_init(void) {
#ifdef _OPENMP
    omp_init_lock(&fnn_blas_lock);
    fnn_threads = omp_get_max_threads();
    /* Only where OpenMP promises full teams: with OMP_DYNAMIC or a thread limit below the
       core count the BLAS keeps its own threads. */
    if (!omp_get_dynamic() && omp_get_thread_limit() >= omp_get_num_procs())
        scipy_openblas_set_threads_callback_function(fnn_blas_threads);
    pthread_atfork(NULL, NULL, fnn_after_fork_in_child);
#endif
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
    fnn_threads = n;
    FNN_BLAS_LOCK;
    fnn_blas_threads_wanted = n;
    if (!fnn_blas_serial_depth) scipy_openblas_set_num_threads(n);
    FNN_BLAS_UNLOCK;
}

void fnn_blas_serial_begin(void) {
    FNN_BLAS_LOCK;
    if (fnn_blas_serial_depth++ == 0) {
        if (!fnn_blas_threads_wanted) fnn_blas_threads_wanted = scipy_openblas_get_num_threads();
        scipy_openblas_set_num_threads(1);
    }
    FNN_BLAS_UNLOCK;
}

void fnn_blas_serial_end(void) {
    FNN_BLAS_LOCK;
    if (--fnn_blas_serial_depth == 0) scipy_openblas_set_num_threads(fnn_blas_threads_wanted);
    FNN_BLAS_UNLOCK;
}

int fnn_get_num_threads(void) {
#ifdef _OPENMP
    return fnn_forked ? 1 : fnn_threads;
#else
    return 1;
#endif
}

int fnn_blas_get_num_threads(void) { /* the caller's count, also inside a serial section */
    FNN_BLAS_LOCK;
    int n = fnn_blas_serial_depth && fnn_blas_threads_wanted ? fnn_blas_threads_wanted
                                                             : scipy_openblas_get_num_threads();
    FNN_BLAS_UNLOCK;
    return n;
}

const char *fnn_blas_config(void) { return scipy_openblas_get_config(); }

/* Rows are copied by the whole team: a random row misses the caches and the TLB, so two
   threads halve the wait (measured on MNIST batches: 79 -> 23 us). */
void fnn_gather_forward_u8(void *out, const void *x, const int64_t *idx, int64_t n,
                           int64_t row_bytes) {
    char *o = (char *)out;
    const char *src = (const char *)x;
    const int threads = fnn_get_num_threads();
    (void)threads;
#pragma omp parallel for schedule(static) if (n * row_bytes >= (1 << 16)) num_threads(threads)
    for (int64_t i = 0; i < n; i++)
        memcpy(o + i * row_bytes, src + idx[i] * row_bytes, (size_t)row_bytes);
}
