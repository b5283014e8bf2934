import { CASES } from '$lib/cases.js';
import { getJson } from '$lib/server/fastapi.js';

/** A case page: model status + metrics and the latest predictions, fetched server-side. */
export async function load({ params, fetch }) {
	const key = params.case;
	const [status, predictions] = await Promise.all([
		getJson(fetch, `/api/v1/${key}/status`),
		getJson(fetch, `/api/v1/${key}/predictions?limit=20`)
	]);
	return {
		key,
		title: CASES[key].title,
		status,
		predictions
	};
}
