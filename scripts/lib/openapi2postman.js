// Converts OpenAPI documents to Postman collections with openapi-to-postmanv2's node API (scripts/postman.py runs it).
//
//   node openapi2postman.js MODULE_DIR OPTIONS_JSON < {"name": document, ...} > {"name": collection, ...}
//
// MODULE_DIR is the installed openapi-to-postmanv2 package (scripts/install.sh puts it under .tools/node).
// The converter fakes a value for every schema without an example with Math.random; it is replaced here by a
// generator with a fixed seed, reset before each document, so the same documents give the same collections.
'use strict';

let state = 0;
// Before the converter is loaded: its schema faker keeps the Math.random it finds then.
Math.random = () => {  // mulberry32
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};

const [moduleDir, optionsJson] = process.argv.slice(2);
const converter = require(moduleDir);
const options = JSON.parse(optionsJson);

function convert(document) {
    state = 0x6d6c7374;
    return new Promise((resolve, reject) => {
        converter.convertV2({ type: 'json', data: document }, options, (error, result) => {
            if (error) {
                reject(error);
            } else if (!result.result) {
                reject(new Error(`openapi-to-postmanv2 refused the document: ${result.reason}`));
            } else {
                resolve(result.output[0].data);
            }
        });
    });
}

async function main() {
    const chunks = [];
    for await (const chunk of process.stdin) {
        chunks.push(chunk);
    }
    const documents = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    const collections = {};
    for (const name of Object.keys(documents).sort()) {
        collections[name] = await convert(documents[name]);  // one at a time: they share the seeded generator
    }
    process.stdout.write(JSON.stringify(collections));
}

main().catch((error) => {
    process.stderr.write(`${error.stack || error}\n`);
    process.exit(1);
});
