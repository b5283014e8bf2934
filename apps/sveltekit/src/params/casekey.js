import { CASE_KEYS } from '$lib/cases.js';

/** Only the three cases are routes: /tfd, /eta, /ecci (and /api/<case>/...). */
export function match(param) {
	return CASE_KEYS.includes(param);
}
