/* The paged latent cache seen from outside the forward pass: usage, a sequence's pages, and
 * pages shared between sequences by reference count (what a server's prefix cache builds on). */
#include <string.h>

#include "../common/error.h"
#include "model_internal.h"

clnpu_cache_usage clnpu_model_cache_usage(const clnpu_model *m)
{
    return (clnpu_cache_usage){m->pages, m->nfree, m->opt.page_size};
}

unsigned clnpu_model_page_refs(const clnpu_model *m, int page)
{
    return page >= 0 && (size_t)page < m->pages ? m->page_refs[page] : 0;
}

clnpu_status clnpu_model_sequence_pages(const clnpu_model *m, size_t seq, size_t n, int *out_pages)
{
    if (seq >= m->opt.max_sequences)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "sequence %zu: the model was created for %zu", seq,
                          m->opt.max_sequences);
    if (n > m->max_blocks || n * m->opt.page_size > m->seq_len[seq] + m->opt.page_size - 1)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "sequence %zu holds %zu tokens: it has no page %zu", seq,
                          m->seq_len[seq], n ? n - 1 : 0);
    memcpy(out_pages, m->block_table + seq * m->max_blocks, n * sizeof *out_pages);
    return CLNPU_OK;
}

static clnpu_status check_pages(const clnpu_model *m, const int *pages, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (pages[i] < 0 || (size_t)pages[i] >= m->pages || !m->page_refs[pages[i]])
            return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "cache page %d is not a page in use (pool of %zu)", pages[i],
                              m->pages);
    return CLNPU_OK;
}

clnpu_status clnpu_model_pages_retain(clnpu_model *m, const int *pages, size_t n)
{
    clnpu_status st = check_pages(m, pages, n);
    for (size_t i = 0; !st && i < n; i++) m->page_refs[pages[i]]++;
    /* tensor-parallel ranks keep the same page ids in their own whole copies of the cache */
    for (size_t r = 1; !st && m->peers && r < m->tp_size; r++) st = clnpu_model_pages_retain(m->peers[r - 1], pages, n);
    return st;
}

void clnpu_model_pages_release(clnpu_model *m, const int *pages, size_t n)
{
    if (check_pages(m, pages, n)) return;
    for (size_t i = 0; i < n; i++)
        if (!--m->page_refs[pages[i]]) m->free_pages[m->nfree++] = pages[i];
    for (size_t r = 1; m->peers && r < m->tp_size; r++) clnpu_model_pages_release(m->peers[r - 1], pages, n);
}

clnpu_status clnpu_model_sequence_attach(clnpu_model *m, size_t seq, const int *pages, size_t n)
{
    if (seq >= m->opt.max_sequences)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "sequence %zu: the model was created for %zu", seq,
                          m->opt.max_sequences);
    if (m->seq_len[seq])
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "sequence %zu is not empty (%zu tokens): reset it first", seq,
                          m->seq_len[seq]);
    if (n > m->max_blocks || n * m->opt.page_size >= m->opt.max_context)
        return clnpu_fail(CLNPU_ERR_INVALID_ARGUMENT, "%zu shared pages leave no room in a context of %zu tokens", n,
                          m->opt.max_context);
    clnpu_status st = check_pages(m, pages, n);
    for (size_t r = 1; !st && m->peers && r < m->tp_size; r++)
        st = clnpu_model_sequence_attach(m->peers[r - 1], seq, pages, n);
    if (st) return st;
    int *row = m->block_table + seq * m->max_blocks;
    for (size_t i = 0; i < n; i++) row[i] = pages[i], m->page_refs[pages[i]]++;
    m->seq_len[seq] = n * m->opt.page_size;
    return clnpu_buffer_write(m->block_table_dev, 0, m->block_table, m->opt.max_sequences * m->max_blocks * sizeof(int));
}
