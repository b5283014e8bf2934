import adapter from '@sveltejs/adapter-node';

/** @type {import('@sveltejs/kit').Config} */
const config = {
	kit: {
		// Production server: `node build` (PORT, HOST; FASTAPI_URL is read at run time).
		adapter: adapter({ out: 'build' })
	}
};

export default config;
