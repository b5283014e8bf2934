import { CASE_KEYS } from '$lib/cases.js';
import { getJson } from '$lib/server/fastapi.js';

/** Landing page: one status card per case (each may carry an error instead of data). */
export async function load({ fetch }) {
	const results = await Promise.all(CASE_KEYS.map((key) => getJson(fetch, `/api/v1/${key}/status`)));
	return {
		cases: Object.fromEntries(CASE_KEYS.map((key, i) => [key, results[i]]))
	};
}
