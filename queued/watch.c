#include "watch.h"

int watch_filter_match(const struct watch_filter *wf, uint32_t org_id, uint32_t inbox_id)
{
	if (!wf)
		return 0;
	if (wf->only_inbox && wf->only_inbox != inbox_id)
		return 0;
	if (wf->everything)
		return 1;
	if (wf->org_id != org_id)
		return 0;
	if (wf->all_inboxes || inbox_id == 0)
		return wf->all_inboxes || inbox_id == 0;
	for (size_t i = 0; i < wf->n; i++)
		if (wf->inboxes[i] == inbox_id)
			return 1;
	return 0;
}
