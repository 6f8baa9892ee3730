// The engines' regex, for tests/test_ecmaregex.py: C++ std::regex (ECMAScript), regex_search.
// stdin, one command per line: "P<pattern>" compiles (answers "ok" or "error"),
// "N<name>" searches the last pattern in <name> (answers "1" or "0").
#include <iostream>
#include <regex>
#include <string>

int main() {
    std::regex pattern;
    std::string line;
    while (std::getline(std::cin, line)) {
        if (line.empty()) continue;
        const std::string rest = line.substr(1);
        if (line[0] == 'P') {
            try {
                pattern = std::regex(rest);
                std::cout << "ok" << std::endl;
            } catch (const std::regex_error &) {
                std::cout << "error" << std::endl;
            }
        } else {
            std::cout << (std::regex_search(rest, pattern) ? "1" : "0") << std::endl;
        }
    }
    return 0;
}
