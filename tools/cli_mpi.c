/* The CLI's side of an MPI run: MPI is initialised here (not in the library), the library gets the
 * communicator, and a failed rank ends the whole job with MPI_Abort instead of waiting in
 * MPI_Finalize for a peer that may be stopped or dead. Also the test-only fault injection. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef CLNPU_HAVE_MPI
#include <mpi.h>
#endif

#include "cli.h"

#ifdef CLNPU_HAVE_MPI
static MPI_Comm world;
#endif
static bool started; /* MPI_Init was called here */
static int rank;

/* Open MPI's launcher sets OMPI_COMM_WORLD_SIZE in every rank's environment. */
int cli_mpi_ranks_from_env(void)
{
    const char *size = getenv("OMPI_COMM_WORLD_SIZE");
    return size && atoi(size) > 1 ? atoi(size) : 1;
}

clnpu_status cli_mpi_begin(const void **out_comm)
{
    *out_comm = NULL;
    if (cli_mpi_ranks_from_env() <= 1) return CLNPU_OK;
#ifdef CLNPU_HAVE_MPI
    int provided;
    /* funnelled: `serve` has HTTP threads, but only the main thread calls MPI */
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "clnpu run: error: MPI_Init failed\n");
        return CLNPU_ERR_IO;
    }
    started = true;
    world = MPI_COMM_WORLD;
    MPI_Comm_rank(world, &rank);
    *out_comm = &world;
    return CLNPU_OK;
#else
    fprintf(stderr, "clnpu run: error: started by mpirun with %d ranks, but clnpu was built without MPI (install "
            "libopenmpi-dev and rebuild)\n", cli_mpi_ranks_from_env());
    return CLNPU_ERR_UNSUPPORTED;
#endif
}

int cli_mpi_end(int rc)
{
#ifdef CLNPU_HAVE_MPI
    if (!started) return rc;
    started = false;
    if (rc == CLI_EXIT_OK) {
        MPI_Finalize();
        return rc;
    }
    /* the other ranks may be waiting for this one, stopped, or dead: end them all. A moment's
     * linger first, so that their own reports (rank 0's names the rank at fault) are printed. */
    fflush(stdout), fflush(stderr);
    struct timespec linger = {0, 500000000};
    nanosleep(&linger, NULL);
    MPI_Abort(world, rc);
#endif
    return rc;
}

/* CLNPU_FAULT_RANK, for the tests of failing ranks: "r" kills rank r at its first step, "r:stop"
 * stops it there (SIGSTOP: a hung rank), "r:load" makes its set-up fail. Read by the CLI only: the
 * library raises no signals. */
static const char *fault_here(void)
{
    const char *f = getenv("CLNPU_FAULT_RANK");
    if (!f || !*f || !started || atoi(f) != rank) return NULL;
    const char *colon = strchr(f, ':');
    return colon ? colon + 1 : "";
}

bool cli_mpi_fault_load(void)
{
    const char *f = fault_here();
    return f && !strcmp(f, "load");
}

void cli_mpi_fault_step(void)
{
    const char *f = fault_here();
    if (!f) return;
    if (!*f) raise(SIGKILL);
    if (!strcmp(f, "stop")) raise(SIGSTOP);
}

int cli_mpi_rank(void) { return rank; }
