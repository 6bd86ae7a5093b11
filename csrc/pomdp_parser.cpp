#include "pomdp_parser.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <stdexcept>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "pomdp_sparse.hpp"
#include "pomdp_validate.hpp"

namespace trim {
namespace {

// ---------------------------------------------------------------------------------------
// Tokens.  The format is a token stream (a matrix may span lines, a probability may sit on
// the line after its "T: a : s : s'"), so we tokenise the whole text first, keeping the
// 1-based line of every token for error messages.
// ---------------------------------------------------------------------------------------

constexpr double kMiB = 1024.0 * 1024.0;

enum class Tok : std::uint8_t { Colon, Star, Number, Sign, Name, Bad, End };

struct Token {
    Tok kind;
    bool is_int;        // Number made of digits only (usable as a count or an index)
    bool out_of_range;  // Number that does not fit a double (reported as an error when used)
    int line;
    std::string_view text;
    double value;
};

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'; }
// pomdp-solve's identifiers: [A-Za-z][A-Za-z0-9_-]*.
bool is_name_char(char c) { return is_alpha(c) || is_digit(c) || c == '_' || c == '-'; }

// Unsigned decimal: digits [. digits*] [exp] | . digits+ [exp], exp = [eE][+-]?digits+.
bool is_unsigned_number(std::string_view s) {
    std::size_t i = 0, n = s.size(), int_digits = 0, frac_digits = 0;
    while (i < n && is_digit(s[i])) ++i, ++int_digits;
    if (i < n && s[i] == '.') {
        ++i;
        while (i < n && is_digit(s[i])) ++i, ++frac_digits;
    }
    if (int_digits + frac_digits == 0) return false;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        ++i;
        if (i < n && (s[i] == '+' || s[i] == '-')) ++i;
        std::size_t exp_digits = 0;
        while (i < n && is_digit(s[i])) ++i, ++exp_digits;
        if (exp_digits == 0) return false;
    }
    return i == n;
}

Token classify(std::string_view w, int line) {
    Token t{Tok::Bad, false, false, line, w, 0.0};
    if (w == "+" || w == "-") {
        t.kind = Tok::Sign;
        return t;
    }
    std::string_view body = w;
    bool negative = false;
    if (!body.empty() && (body[0] == '+' || body[0] == '-')) {
        negative = body[0] == '-';
        body.remove_prefix(1);
    }
    if (is_unsigned_number(body)) {
        t.kind = Tok::Number;
        t.is_int = body.size() == w.size() &&
                   std::all_of(body.begin(), body.end(), [](char c) { return is_digit(c); });
        double v = 0.0;
        auto res = std::from_chars(body.data(), body.data() + body.size(), v,
                                   std::chars_format::general);
        if (res.ec == std::errc::result_out_of_range) {
            // from_chars reports underflow too and then leaves v unset: strtod tells
            // overflow (+-HUGE_VAL) from underflow (a denormal or zero, a fine number).
            const std::string copy(body);
            v = std::strtod(copy.c_str(), nullptr);
            t.out_of_range = std::isinf(v);
        } else if (res.ec != std::errc() || res.ptr != body.data() + body.size()) {
            t.kind = Tok::Bad;
            return t;
        }
        t.value = negative ? -v : v;
        return t;
    }
    if (is_alpha(w[0]) && std::all_of(w.begin(), w.end(), is_name_char)) {
        t.kind = Tok::Name;
    }
    return t;
}

std::vector<Token> tokenize(const std::string& text) {
    std::vector<Token> out;
    out.reserve(text.size() / 4 + 16);
    const char* p = text.data();
    const std::size_t n = text.size();
    std::size_t i = 0;
    // A UTF-8 byte order mark (editors on Windows add one) is not part of the text.
    if (n >= 3 && std::memcmp(p, "\xEF\xBB\xBF", 3) == 0) i = 3;
    int line = 1;
    while (i < n) {
        const char c = p[i];
        // Line ends are LF (Unix), CRLF (Windows) or a lone CR (classic Mac OS): each ends
        // one line, so comments stop there and messages give the line an editor shows.
        if (c == '\n' || c == '\r') {
            ++line;
            i += (c == '\r' && i + 1 < n && p[i + 1] == '\n') ? 2 : 1;
        } else if (is_space(c)) {
            ++i;
        } else if (c == '#') {
            while (i < n && p[i] != '\n' && p[i] != '\r') ++i;
        } else if (c == ':') {
            out.push_back({Tok::Colon, false, false, line, std::string_view(p + i, 1), 0.0});
            ++i;
        } else if (c == '*') {
            out.push_back({Tok::Star, false, false, line, std::string_view(p + i, 1), 0.0});
            ++i;
        } else {
            const std::size_t start = i;
            while (i < n && !is_space(p[i]) && p[i] != ':' && p[i] != '#' && p[i] != '*') ++i;
            out.push_back(classify(std::string_view(p + start, i - start), line));
        }
    }
    out.push_back({Tok::End, false, false, line, std::string_view(), 0.0});
    return out;
}

// Words of the format that cannot name a state, action or observation (pomdp-solve's lexer
// reads them as keywords wherever they appear).
bool is_reserved(std::string_view w) {
    static const char* const reserved[] = {
        "discount", "values",  "states",   "actions", "observations", "start",
        "include",  "exclude", "T",        "O",       "R",            "uniform",
        "identity", "reward",  "rewards",  "cost",    "costs",        "reset"};
    for (const char* r : reserved)
        if (w == r) return true;
    return false;
}

// Names the parser reads and the writer writes: [A-Za-z][A-Za-z0-9_-]*, not reserved.
bool valid_name(std::string_view w) {
    return !w.empty() && is_alpha(w[0]) &&
           std::all_of(w.begin(), w.end(), is_name_char) && !is_reserved(w);
}

bool is_statement_keyword(std::string_view w) {
    return w == "discount" || w == "values" || w == "states" || w == "actions" ||
           w == "observations" || w == "start" || w == "T" || w == "O" || w == "R";
}

// Renders a token for a message: 'foo', or "end of input".
std::string show(const Token& t) {
    if (t.kind == Tok::End) return "end of input";
    std::string s(t.text.substr(0, 40));
    // Keep messages printable whatever bytes a corrupted file holds.
    for (char& c : s)
        if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
    if (t.text.size() > 40) s += "...";
    return "'" + s + "'";
}

std::string plural(std::size_t n, const char* word) {
    std::string w(word);
    if (n != 1) w = (!w.empty() && w.back() == 'y') ? w.substr(0, w.size() - 1) + "ies" : w + "s";
    return std::to_string(n) + " " + w;
}

// A declared set of states, actions or observations.
struct Decl {
    const char* what;     // "state", "action", "observation"
    const char* keyword;  // "states", ...
    bool declared = false;
    int line = 0;
    int count = 0;
    std::vector<std::string> names;
    std::unordered_map<std::string_view, int> index;
};

// One R: statement, kept until the end so that R(a, s, s', o) can be reduced to R(a, s)
// with the final T and Z.  kind 0: one value for (sp, o) (either may be -1 = all);
// 1: a row over o for sp (or all sp); 2: an S x O matrix over (s', o).
struct RSpec {
    int sp;
    int o;
    int kind;
    std::size_t off;  // first value in Parser::rvals_
    int line;         // where the statement starts (for messages about R(a, s))
};

// T or Z while they are parsed: dense rows (the layout of Pomdp::T/Z, written in place) or,
// for a model whose dense arrays would be too large, one list of (column, value) writes per
// row.  A list keeps later writes after earlier ones (later entries override earlier ones in
// the format) and is compacted, last write winning, when it outgrows twice the row width;
// a whole-row write replaces the list.  take_csr() gives the final rows without zeros.
// What the parse allocates (for the out-of-memory message, written after the parser is gone).
struct ParseNeed {
    double bytes = -1.0;
    bool sparse = false;
};

class RowStore {
  public:
    struct Entry {
        int col;
        double val;
    };

    void init(bool sparse, std::size_t rows, std::size_t cols) {
        sparse_ = sparse;
        rows_ = rows;
        cols_ = cols;
        if (sparse) {
            lists_.assign(rows, {});
        } else {
            dense_.assign(rows * cols, 0.0);
        }
    }
    bool sparse() const { return sparse_; }
    // Entries held by the lists (sparse; compaction lowers it).
    std::size_t entries() const { return entries_; }

    void set(std::size_t row, std::size_t col, double v) {
        if (!sparse_) {
            dense_[row * cols_ + col] = v;
            return;
        }
        auto& l = lists_[row];
        if (l.empty() && v == 0.0) return;  // a zero written over nothing changes nothing
        l.push_back({static_cast<int>(col), v});
        ++entries_;
        if (l.size() > 2 * cols_ + 8) compact(l);
    }
    void set_row(std::size_t row, const double* v) {
        if (!sparse_) {
            std::copy(v, v + cols_, dense_.begin() + static_cast<std::ptrdiff_t>(row * cols_));
            return;
        }
        clear(row);
        auto& l = lists_[row];
        for (std::size_t j = 0; j < cols_; ++j)
            if (v[j] != 0.0) l.push_back({static_cast<int>(j), v[j]});
        entries_ += l.size();
    }
    void set_row_const(std::size_t row, double v) {
        if (!sparse_) {
            std::fill_n(dense_.begin() + static_cast<std::ptrdiff_t>(row * cols_), cols_, v);
            return;
        }
        clear(row);
        if (v == 0.0) return;
        auto& l = lists_[row];
        l.reserve(cols_);
        for (std::size_t j = 0; j < cols_; ++j) l.push_back({static_cast<int>(j), v});
        entries_ += cols_;
    }
    // Row `row` = the unit vector e_col (identity).
    void set_row_unit(std::size_t row, std::size_t col) {
        if (!sparse_) {
            double* r = dense_.data() + row * cols_;
            for (std::size_t j = 0; j < cols_; ++j) r[j] = j == col ? 1.0 : 0.0;
            return;
        }
        clear(row);
        lists_[row].push_back({static_cast<int>(col), 1.0});
        ++entries_;
    }

    std::vector<double>&& take_dense() { return std::move(dense_); }
    // The final rows: columns increasing, the last write of each column, zeros dropped.
    Csr take_csr() {
        Csr out;
        out.ptr.assign(rows_ + 1, 0);
        std::size_t nnz = 0;
        for (auto& l : lists_) {
            compact(l);
            for (const Entry& e : l) nnz += e.val != 0.0 ? 1 : 0;
        }
        out.idx.reserve(nnz);
        out.val.reserve(nnz);
        for (std::size_t r = 0; r < rows_; ++r) {
            for (const Entry& e : lists_[r])
                if (e.val != 0.0) {
                    out.idx.push_back(e.col);
                    out.val.push_back(e.val);
                }
            std::vector<Entry>().swap(lists_[r]);
            out.ptr[r + 1] = static_cast<std::int64_t>(out.idx.size());
        }
        std::vector<std::vector<Entry>>().swap(lists_);
        entries_ = 0;
        return out;
    }

  private:
    void clear(std::size_t row) {
        entries_ -= lists_[row].size();
        lists_[row].clear();
    }
    void compact(std::vector<Entry>& l) {
        const std::size_t before = l.size();
        std::stable_sort(l.begin(), l.end(),
                         [](const Entry& x, const Entry& y) { return x.col < y.col; });
        std::size_t k = 0;
        for (std::size_t i = 0; i < l.size(); ++i) {
            if (k > 0 && l[k - 1].col == l[i].col) {
                l[k - 1] = l[i];  // the later write wins
            } else {
                l[k++] = l[i];
            }
        }
        l.resize(k);
        entries_ -= before - k;
    }

    bool sparse_ = false;
    std::size_t rows_ = 0, cols_ = 0, entries_ = 0;
    std::vector<double> dense_;
    std::vector<std::vector<Entry>> lists_;
};

class Parser {
  public:
    // `need` receives the header's memory estimate once the sizes are known (for the
    // out-of-memory message, written after the parser is gone).
    Parser(const std::string& text, const std::string& filename, const ParseOptions& opts,
           ParseNeed* need)
        : filename_(filename), opts_(opts), need_(need), toks_(tokenize(text)) {
        states_.what = "state";
        states_.keyword = "states";
        actions_.what = "action";
        actions_.keyword = "actions";
        obs_.what = "observation";
        obs_.keyword = "observations";
    }

    bool cost() const { return cost_; }

    Pomdp parse() {
        while (peek().kind != Tok::End) statement();
        return finish();
    }

  private:
    const std::string& filename_;
    ParseOptions opts_;
    ParseNeed* need_;
    double base_bytes_ = 0.0;  // header estimate plus tokens
    std::vector<Token> toks_;
    std::size_t pos_ = 0;
    std::size_t stmt_begin_ = 0;  // first token of the statement being parsed

    Decl states_, actions_, obs_;
    Pomdp m_;
    bool have_discount_ = false, have_values_ = false, have_start_ = false, allocated_ = false;
    int discount_line_ = 0, start_line_ = 0;
    bool cost_ = false;
    std::vector<int> t_line_, z_line_;  // line that last set row T[a, s, :] / Z[a, s', :]
    RowStore t_, z_;                    // T and Z until finish()
    std::vector<RSpec> rspecs_;
    std::vector<double> rvals_;
    std::vector<std::vector<std::uint32_t>> rlist_;  // per (a, s): specs since the last full cover
    std::vector<double> nums_;                        // scratch for number lists

    // ---- token helpers ----------------------------------------------------------------
    const Token& peek(std::size_t k = 0) const {
        const std::size_t i = std::min(pos_ + k, toks_.size() - 1);
        return toks_[i];
    }
    const Token& next() {
        const Token& t = toks_[pos_];
        if (pos_ + 1 < toks_.size()) ++pos_;
        return t;
    }
    [[noreturn]] void fail(int line, const std::string& msg) const {
        throw ParseError(filename_, line, msg);
    }
    [[noreturn]] void fail_at(const Token& t, const std::string& expected) const {
        std::string found = show(t);
        if (t.kind == Tok::Bad) found = "malformed token " + found;
        fail(t.line, "expected " + expected + "; found " + found);
    }

    // True when the next tokens start a statement ("T :", "start include :", ...).
    bool at_statement() const {
        const Token& t = peek();
        if (t.kind == Tok::End) return true;
        if (t.kind != Tok::Name || !is_statement_keyword(t.text)) return false;
        if (peek(1).kind == Tok::Colon) return true;
        return t.text == "start" && peek(1).kind == Tok::Name &&
               (peek(1).text == "include" || peek(1).text == "exclude");
    }

    void expect_colon(const char* after) {
        if (peek().kind != Tok::Colon) fail_at(peek(), std::string("':' after '") + after + "'");
        next();
    }

    // After a complete statement the next token must start another one.
    void expect_statement_end(const std::string& what) {
        if (!at_statement()) {
            const Token& t = peek();
            if (t.kind == Tok::Name && is_statement_keyword(t.text))
                fail_at(peek(1), "':' after '" + std::string(t.text) + "'");
            std::string found = show(t);
            if (t.kind == Tok::Bad) found = "malformed token " + found;
            fail(t.line, "unexpected " + found + " after " + what +
                             "; expected the next statement (discount:, values:, states:, "
                             "actions:, observations:, start:, T:, O: or R:)");
        }
    }

    // Reads a maximal run of numbers into nums_ (a lone sign may precede a number).
    // Probabilities must lie in [0, 1].  Returns the line of the last number (or `line0`).
    int read_numbers(bool prob, int line0) {
        nums_.clear();
        int last = line0;
        for (;;) {
            const Token& t = peek();
            double sign = 1.0;
            const Token* num = &t;
            if (t.kind == Tok::Sign) {
                if (peek(1).kind != Tok::Number) fail_at(peek(1), "a number after '" + std::string(t.text) + "'");
                sign = t.text == "-" ? -1.0 : 1.0;
                num = &peek(1);
            } else if (t.kind != Tok::Number) {
                break;
            }
            if (num->out_of_range) fail(num->line, "number " + show(*num) + " is out of range");
            const double v = sign * num->value;
            if (prob && !(v >= 0.0 && v <= 1.0))
                fail(num->line, "probability must be in [0, 1]; found " + show(*num));
            nums_.push_back(v);
            last = num->line;
            if (t.kind == Tok::Sign) next();
            next();
        }
        return last;
    }

    // The current statement's tokens [stmt_begin_, end) as written: "'T: a : s'".  Built
    // only for error messages (building it for every entry would dominate the parse time).
    std::string stmt_text(std::size_t end) const {
        std::string out = "'";
        for (std::size_t i = stmt_begin_; i < end && i < toks_.size(); ++i) {
            const Token& t = toks_[i];
            if (t.kind == Tok::Colon) {
                out += i == stmt_begin_ + 1 ? ":" : " :";
            } else {
                if (i > stmt_begin_) out += ' ';
                out += t.text;
            }
        }
        return out + "'";
    }

    void expect_statement_end() {
        if (!at_statement()) expect_statement_end(stmt_text(pos_));
    }

    // Reads exactly `want` numbers ending the current statement.
    void read_exact(std::size_t want, bool prob, int line0, const char* shape) {
        const std::size_t head_end = pos_;
        const int last = read_numbers(prob, line0);
        if (nums_.size() == want) {
            if (!at_statement()) expect_statement_end(stmt_text(head_end));
            return;
        }
        const std::string what = stmt_text(head_end);
        const Token& t = peek();
        if (nums_.size() < want && t.kind == Tok::Bad) fail_at(t, "a number");
        if (nums_.size() < want && !at_statement()) {
            if (t.kind == Tok::Name && is_statement_keyword(t.text))
                fail_at(peek(1), "':' after '" + std::string(t.text) + "'");
            fail_at(t, "a number");
        }
        fail(nums_.size() > want ? last : (nums_.empty() ? line0 : last),
             what + " (line " + std::to_string(line0) + ") expects " +
                 plural(want, prob ? "probability" : "number") + " (" + shape + "); found " +
                 std::to_string(nums_.size()));
    }

    // ---- declarations --------------------------------------------------------------------
    void declare(Decl& d, int line) {
        if (d.declared)
            fail(line, std::string("'") + d.keyword + ":' declared twice (first at line " +
                           std::to_string(d.line) + ")");
        if (allocated_)
            fail(line, std::string("'") + d.keyword +
                           ":' must come before the start:, T:, O: and R: entries");
        d.declared = true;
        d.line = line;
        const Token& t = peek();
        if (t.kind == Tok::Number && t.is_int) {
            long long n = 0;
            auto res = std::from_chars(t.text.data(), t.text.data() + t.text.size(), n);
            if (res.ec != std::errc() || n <= 0 || n > 100000000)
                fail(t.line, std::string("the number of ") + d.what +
                                 "s must be an integer in [1, 100000000]; found " + show(t));
            d.count = static_cast<int>(n);
            next();
            expect_statement_end(std::string("'") + d.keyword + ": " + std::string(t.text) + "'");
            return;
        }
        while (peek().kind == Tok::Name && !at_statement()) {
            const Token& n = next();
            if (is_reserved(n.text))
                fail(n.line, std::string(d.what) + " name " + show(n) +
                                 " is a keyword of the .pomdp format");
            auto [it, fresh] = d.index.emplace(n.text, static_cast<int>(d.names.size()));
            if (!fresh)
                fail(n.line, std::string("duplicate ") + d.what + " name " + show(n) + " (also " +
                                 d.what + " " + std::to_string(it->second) + ")");
            d.names.emplace_back(n.text);
        }
        if (d.names.empty())
            fail_at(peek(), std::string("a count or a list of ") + d.what + " names after '" +
                                d.keyword + ":'");
        d.count = static_cast<int>(d.names.size());
        expect_statement_end(std::string("the ") + d.what + " names");
    }

    void require_declared(const Decl& d, int line, const char* stmt) {
        if (!d.declared)
            fail(line, std::string("'") + stmt + "' needs '" + d.keyword + ":' declared before it");
    }

    void allocate(int line, const char* stmt) {
        if (allocated_) return;
        require_declared(states_, line, stmt);
        require_declared(actions_, line, stmt);
        require_declared(obs_, line, stmt);
        const double S = states_.count, A = actions_.count, O = obs_.count;
        const double entries = A * S * S + A * S * O;
        const double dense_need = parse_memory_bytes(S, A, O);
        const double have = static_cast<double>(toks_.capacity()) * sizeof(Token);
        const double limit = opts_.max_memory_mb * kMiB;
        bool sparse = opts_.storage == ParseOptions::Storage::Sparse;
        if (opts_.storage == ParseOptions::Storage::Auto)
            sparse = !(entries <= static_cast<double>(opts_.max_entries) &&
                       dense_need <= opts_.dense_max_mb * kMiB && dense_need + have <= limit);
        const std::string shape = plural(actions_.count, "action") + " x " +
                                  plural(states_.count, "state") + " x (" +
                                  plural(states_.count, "state") + " + " +
                                  plural(obs_.count, "observation") + ")";
        if (!sparse && entries > static_cast<double>(opts_.max_entries))
            fail(states_.line, "model too large: " + std::to_string(actions_.count) + " actions x " +
                                   std::to_string(states_.count) + " states x (" +
                                   std::to_string(states_.count) + " states + " +
                                   std::to_string(obs_.count) + " observations) = " +
                                   std::to_string(static_cast<long long>(entries)) +
                                   " dense entries exceeds the limit of " +
                                   std::to_string(opts_.max_entries));
        // The header fixes every allocation below (dense) or its per-row part (sparse):
        // refuse before making any of it when it would exceed the memory limit (a 116-byte
        // file can declare 16,383 states).
        const double need = sparse ? parse_sparse_base_bytes(S, A, O) : dense_need;
        need_->bytes = need;
        need_->sparse = sparse;
        base_bytes_ = need + have;
        if (need + have > limit) {
            char buf[256];
            std::snprintf(buf, sizeof buf,
                          sparse ? "needs about %.1f MB for the row bookkeeping of its sparse T "
                                   "and Z and for R (plus %.1f MB of tokens), over "
                                   "max_memory_mb=%g"
                                 : "needs about %.1f MB for its dense arrays T, Z and R (plus "
                                   "%.1f MB of tokens), over max_memory_mb=%g",
                          need / kMiB, have / kMiB, opts_.max_memory_mb);
            throw MemoryLimitError(filename_ + ":" + std::to_string(states_.line) +
                                   ": model too large: " + shape + " " + buf +
                                   "; raise the limit (solve --max-memory-mb) or use a "
                                   "smaller model");
        }
        m_.n_states = states_.count;
        m_.n_actions = actions_.count;
        m_.n_obs = obs_.count;
        const std::size_t s = m_.n_states, a = m_.n_actions, o = m_.n_obs;
        t_.init(sparse, a * s, s);
        z_.init(sparse, a * s, o);
        t_line_.assign(a * s, 0);
        z_line_.assign(a * s, 0);
        rlist_.assign(a * s, {});
        allocated_ = true;
    }

    // Sparse storage: refuses, before a statement writes them, `more` entries that would take
    // the lists over the memory limit (each entry taken at kEntryBytes, its 16 bytes plus
    // the lists' growth).  Dense storage was sized by the header.
    static constexpr double kEntryBytes = 24.0;
    void reserve_entries(double more, int line, const char* what) {
        if (!t_.sparse()) return;
        const double held = static_cast<double>(t_.entries() + z_.entries());
        const double bytes = base_bytes_ + (held + more) * kEntryBytes;
        if (bytes > opts_.max_memory_mb * kMiB) {
            char buf[320];
            std::snprintf(buf, sizeof buf,
                          "model too large: this %s entry writes %.0f probabilities, taking the "
                          "sparse rows of T and Z to about %.1f MB (%.0f entries held), over "
                          "max_memory_mb=%g; raise the limit (solve --max-memory-mb) or use a "
                          "smaller model",
                          what, more, bytes / kMiB, held, opts_.max_memory_mb);
            throw MemoryLimitError(filename_ + ":" + std::to_string(line) + ": " + buf);
        }
        need_->bytes = std::max(need_->bytes, bytes);
    }
    static double nonzeros(const std::vector<double>& v) {
        double n = 0;
        for (double x : v) n += x != 0.0 ? 1 : 0;
        return n;
    }

    // A reference to one element of `d` or `*` (-1).
    int ref(const Decl& d) {
        const Token& t = peek();
        if (t.kind == Tok::Star) {
            next();
            return -1;
        }
        if (t.kind == Tok::Number && t.is_int) {
            long long i = -1;
            auto res = std::from_chars(t.text.data(), t.text.data() + t.text.size(), i);
            if (res.ec != std::errc() || i < 0 || i >= d.count)
                fail(t.line, std::string(d.what) + " index " + show(t) + " out of range: there are " +
                                 plural(d.count, d.what) + " (valid indices 0.." +
                                 std::to_string(d.count - 1) + ")");
            next();
            return static_cast<int>(i);
        }
        if (t.kind == Tok::Name) {
            auto it = d.index.find(t.text);
            if (it == d.index.end()) {
                std::string known;
                if (d.names.empty()) {
                    known = std::string(d.keyword) + " were given as a count; use indices 0.." +
                            std::to_string(d.count - 1);
                } else {
                    known = "known: ";
                    for (std::size_t k = 0; k < d.names.size() && k < 8; ++k)
                        known += (k ? ", " : "") + d.names[k];
                    if (d.names.size() > 8) known += ", ...";
                }
                fail(t.line, std::string("unknown ") + d.what + " " + show(t) + " (" + known + ")");
            }
            next();
            return it->second;
        }
        fail_at(t, std::string("a ") + d.what + " (name, 0-based index or *)");
    }

    // ---- statements ----------------------------------------------------------------------
    void statement() {
        const Token& kw = peek();
        if (kw.kind != Tok::Name || !is_statement_keyword(kw.text))
            fail_at(kw, "a statement (discount:, values:, states:, actions:, observations:, "
                        "start:, T:, O: or R:)");
        const std::string_view w = kw.text;
        const int line = kw.line;
        stmt_begin_ = pos_;
        next();
        if (w == "start") {
            start_statement(line);
            return;
        }
        expect_colon(std::string(w).c_str());
        if (w == "discount") {
            if (have_discount_)
                fail(line, "'discount:' declared twice (first at line " +
                               std::to_string(discount_line_) + ")");
            read_numbers(false, line);
            if (nums_.size() != 1) {
                if (nums_.empty()) fail_at(peek(), "a number after 'discount:'");
                fail(line, "'discount:' expects one number; found " + std::to_string(nums_.size()));
            }
            expect_statement_end("'discount:'");
            if (!(nums_[0] > 0.0 && nums_[0] <= 1.0)) {
                char buf[64];
                std::snprintf(buf, sizeof buf, "%.10g", nums_[0]);
                fail(line, std::string("discount must be in (0, 1]; got ") + buf);
            }
            m_.discount = nums_[0];
            have_discount_ = true;
            discount_line_ = line;
        } else if (w == "values") {
            if (have_values_) fail(line, "'values:' declared twice");
            const Token& t = peek();
            // "rewards"/"costs" are accepted because classic files spell them so.
            if (t.kind == Tok::Name && (t.text == "reward" || t.text == "rewards")) {
                cost_ = false;
            } else if (t.kind == Tok::Name && (t.text == "cost" || t.text == "costs")) {
                cost_ = true;
            } else {
                fail_at(t, "'reward' or 'cost' after 'values:'");
            }
            next();
            have_values_ = true;
            expect_statement_end("'values:'");
        } else if (w == "states") {
            declare(states_, line);
        } else if (w == "actions") {
            declare(actions_, line);
        } else if (w == "observations") {
            declare(obs_, line);
        } else if (w == "T") {
            t_statement(line);
        } else if (w == "O") {
            o_statement(line);
        } else {
            r_statement(line);
        }
    }

    void start_statement(int line) {
        if (have_start_)
            fail(line, "'start:' declared twice (first at line " + std::to_string(start_line_) + ")");
        bool include = false, exclude = false;
        if (peek().kind == Tok::Name && peek().text == "include") {
            include = true;
            next();
        } else if (peek().kind == Tok::Name && peek().text == "exclude") {
            exclude = true;
            next();
        }
        expect_colon(include ? "start include" : exclude ? "start exclude" : "start");
        allocate(line, "start:");
        have_start_ = true;
        start_line_ = line;
        const int S = m_.n_states;
        m_.b0.assign(S, 0.0);
        if (include || exclude) {
            std::vector<char> in(S, 0);
            std::size_t listed = 0;
            while (!at_statement()) {
                const int s = ref(states_);
                if (s < 0) {
                    std::fill(in.begin(), in.end(), 1);
                } else {
                    in[s] = 1;
                }
                ++listed;
            }
            if (listed == 0)
                fail_at(peek(), std::string("a list of states after 'start ") +
                                    (include ? "include" : "exclude") + ":'");
            std::size_t k = 0;
            for (int s = 0; s < S; ++s) {
                if (exclude) in[s] = !in[s];
                k += in[s] ? 1 : 0;
            }
            if (k == 0) fail(line, "'start exclude:' excludes every state");
            for (int s = 0; s < S; ++s) m_.b0[s] = in[s] ? 1.0 / static_cast<double>(k) : 0.0;
            return;
        }
        // "start: <state>" names one state (an index when there is more than one state: a
        // single probability only makes sense for a one-state model).
        const Token& t = peek();
        if ((t.kind == Tok::Name && !at_statement() && t.text != "uniform") ||
            (t.kind == Tok::Number && t.is_int && S > 1 && peek(1).kind != Tok::Number &&
             peek(1).kind != Tok::Sign)) {
            const int s = ref(states_);
            m_.b0[s] = 1.0;
            expect_statement_end("'start: " + std::string(t.text) + "'");
            return;
        }
        if (t.kind == Tok::Name && t.text == "uniform") {
            next();
            std::fill(m_.b0.begin(), m_.b0.end(), 1.0 / S);
            expect_statement_end("'start: uniform'");
            return;
        }
        read_exact(static_cast<std::size_t>(S), true, line, "one per state");
        std::copy(nums_.begin(), nums_.end(), m_.b0.begin());
    }

    // Index ranges of a reference: [i, i+1) or everything for a wildcard.
    static std::pair<int, int> range(int r, int n) { return r < 0 ? std::make_pair(0, n) : std::make_pair(r, r + 1); }

    static std::string ref_text(const Decl& d, int r) {
        if (r < 0) return "*";
        return d.names.empty() ? std::to_string(r) : d.names[r];
    }

    bool at_keyword(const char* w) const {
        return peek().kind == Tok::Name && peek().text == w;
    }

    void t_statement(int line) {
        allocate(line, "T:");
        const std::size_t S = m_.n_states;
        const int a = ref(actions_);
        auto [a0, a1] = range(a, m_.n_actions);
        const double n_act = a1 - a0;
        if (peek().kind != Tok::Colon) {
            // T: a  <S x S matrix> | uniform | identity
            if (at_keyword("uniform") || at_keyword("identity")) {
                const bool uni = peek().text == "uniform";
                next();
                expect_statement_end();
                reserve_entries(n_act * S * (uni ? S : 1), line, "T:");
                // Written in place: an S x S scratch matrix would double the peak memory.
                for (int aa = a0; aa < a1; ++aa) {
                    for (std::size_t i = 0; i < S; ++i) {
                        if (uni) {
                            t_.set_row_const(aa * S + i, 1.0 / static_cast<double>(S));
                        } else {
                            t_.set_row_unit(aa * S + i, i);
                        }
                    }
                    for (std::size_t s = 0; s < S; ++s) t_line_[aa * S + s] = line;
                }
                return;
            }
            read_exact(S * S, true, line, "an S x S matrix, S = number of states");
            reserve_entries(n_act * nonzeros(nums_), line, "T:");
            for (int aa = a0; aa < a1; ++aa) {
                for (std::size_t i = 0; i < S; ++i) t_.set_row(aa * S + i, &nums_[i * S]);
                for (std::size_t s = 0; s < S; ++s) t_line_[aa * S + s] = line;
            }
            return;
        }
        next();
        const int s = ref(states_);
        auto [s0, s1] = range(s, m_.n_states);
        if (peek().kind != Tok::Colon) {
            // T: a : s  <row over s'> | uniform
            if (at_keyword("uniform")) {
                next();
                expect_statement_end();
                nums_.assign(S, 1.0 / static_cast<double>(S));
            } else {
                read_exact(S, true, line, "a row over next states");
            }
            reserve_entries(n_act * (s1 - s0) * nonzeros(nums_), line, "T:");
            for (int aa = a0; aa < a1; ++aa)
                for (int ss = s0; ss < s1; ++ss) {
                    t_.set_row(aa * S + ss, nums_.data());
                    t_line_[aa * S + ss] = line;
                }
            return;
        }
        next();
        const int sp = ref(states_);
        auto [p0, p1] = range(sp, m_.n_states);
        read_exact(1, true, line, "one probability");
        const double v = nums_[0];
        if (v != 0.0) reserve_entries(n_act * (s1 - s0) * (p1 - p0), line, "T:");
        for (int aa = a0; aa < a1; ++aa)
            for (int ss = s0; ss < s1; ++ss) {
                for (int pp = p0; pp < p1; ++pp) t_.set(aa * S + ss, pp, v);
                t_line_[aa * S + ss] = line;
            }
    }

    void o_statement(int line) {
        allocate(line, "O:");
        const std::size_t S = m_.n_states, O = m_.n_obs;
        const int a = ref(actions_);
        auto [a0, a1] = range(a, m_.n_actions);
        const double n_act = a1 - a0;
        if (peek().kind != Tok::Colon) {
            // O: a  <S x O matrix> | uniform  (identity when S == O)
            if (at_keyword("uniform") || at_keyword("identity")) {
                const bool uni = peek().text == "uniform";
                if (!uni && S != O)
                    fail(peek().line, stmt_text(pos_ + 1) + " needs as many observations as states; got " +
                                          plural(O, "observation") + " and " + plural(S, "state"));
                next();
                expect_statement_end();
                reserve_entries(n_act * S * (uni ? O : 1), line, "O:");
                for (int aa = a0; aa < a1; ++aa) {
                    for (std::size_t i = 0; i < S; ++i) {
                        if (uni) {
                            z_.set_row_const(aa * S + i, 1.0 / static_cast<double>(O));
                        } else {
                            z_.set_row_unit(aa * S + i, i);
                        }
                    }
                    for (std::size_t s = 0; s < S; ++s) z_line_[aa * S + s] = line;
                }
                return;
            }
            read_exact(S * O, true, line, "an S x O matrix over (next state, observation)");
            reserve_entries(n_act * nonzeros(nums_), line, "O:");
            for (int aa = a0; aa < a1; ++aa) {
                for (std::size_t i = 0; i < S; ++i) z_.set_row(aa * S + i, &nums_[i * O]);
                for (std::size_t s = 0; s < S; ++s) z_line_[aa * S + s] = line;
            }
            return;
        }
        next();
        const int sp = ref(states_);
        auto [s0, s1] = range(sp, m_.n_states);
        if (peek().kind != Tok::Colon) {
            if (at_keyword("uniform")) {
                next();
                expect_statement_end();
                nums_.assign(O, 1.0 / static_cast<double>(O));
            } else {
                read_exact(O, true, line, "a row over observations");
            }
            reserve_entries(n_act * (s1 - s0) * nonzeros(nums_), line, "O:");
            for (int aa = a0; aa < a1; ++aa)
                for (int ss = s0; ss < s1; ++ss) {
                    z_.set_row(aa * S + ss, nums_.data());
                    z_line_[aa * S + ss] = line;
                }
            return;
        }
        next();
        const int o = ref(obs_);
        auto [o0, o1] = range(o, m_.n_obs);
        read_exact(1, true, line, "one probability");
        const double v = nums_[0];
        if (v != 0.0) reserve_entries(n_act * (s1 - s0) * (o1 - o0), line, "O:");
        for (int aa = a0; aa < a1; ++aa)
            for (int ss = s0; ss < s1; ++ss) {
                for (int oo = o0; oo < o1; ++oo) z_.set(aa * S + ss, oo, v);
                z_line_[aa * S + ss] = line;
            }
    }

    void r_statement(int line) {
        allocate(line, "R:");
        const std::size_t S = m_.n_states, O = m_.n_obs;
        const int a = ref(actions_);
        expect_colon("R: <action>");
        const int s = ref(states_);
        RSpec spec{-1, -1, 0, rvals_.size(), line};
        if (peek().kind != Tok::Colon) {
            read_exact(S * O, false, line, "an S x O matrix over (next state, observation)");
            spec.kind = 2;
        } else {
            next();
            spec.sp = ref(states_);
            if (peek().kind != Tok::Colon) {
                read_exact(O, false, line, "a row over observations");
                spec.kind = 1;
            } else {
                next();
                spec.o = ref(obs_);
                read_exact(1, false, line, "one number");
                spec.kind = 0;
            }
        }
        rvals_.insert(rvals_.end(), nums_.begin(), nums_.end());
        const bool full = spec.kind == 2 || (spec.sp < 0 && (spec.kind == 1 || spec.o < 0));
        const auto idx = static_cast<std::uint32_t>(rspecs_.size());
        rspecs_.push_back(spec);
        auto [a0, a1] = range(a, m_.n_actions);
        auto [s0, s1] = range(s, m_.n_states);
        for (int aa = a0; aa < a1; ++aa)
            for (int ss = s0; ss < s1; ++ss) {
                auto& lst = rlist_[aa * S + ss];
                if (full) lst.clear();  // a later entry covering all (s', o) hides earlier ones
                lst.push_back(idx);
            }
    }

    // ---- end of input ----------------------------------------------------------------------
    Pomdp finish() {
        const int eof = peek().line;
        if (!have_discount_) fail(eof, "missing 'discount:' declaration");
        for (const Decl* d : {&states_, &actions_, &obs_})
            if (!d->declared) fail(eof, std::string("missing '") + d->keyword + ":' declaration");
        allocate(eof, "end of input");
        m_.state_names = states_.names;
        m_.action_names = actions_.names;
        m_.obs_names = obs_.names;
        const std::size_t S = m_.n_states, A = m_.n_actions, O = m_.n_obs;
        if (!have_start_) m_.b0.assign(S, 1.0 / static_cast<double>(S));

        if (t_.sparse()) {
            m_.sparse = true;
            m_.Ts = t_.take_csr();
            m_.Zs = z_.take_csr();
        } else {
            m_.T = t_.take_dense();
            m_.Z = z_.take_dense();
        }
        m_.R.assign(A * S, 0.0);
        std::vector<double> grid;
        for (std::size_t a = 0; a < A; ++a) {
            for (std::size_t s = 0; s < S; ++s) {
                const auto& lst = rlist_[a * S + s];
                if (lst.empty()) continue;
                const RSpec& first = rspecs_[lst[0]];
                if (lst.size() == 1 && first.kind == 0 && first.sp < 0 && first.o < 0) {
                    // The expectation of a constant is the constant, exactly.
                    m_.R[a * S + s] = rvals_[first.off];
                    continue;
                }
                grid.assign(S * O, 0.0);
                for (std::uint32_t k : lst) {
                    const RSpec& sp = rspecs_[k];
                    const double* v = &rvals_[sp.off];
                    if (sp.kind == 2) {
                        std::copy(v, v + S * O, grid.begin());
                        continue;
                    }
                    auto [p0, p1] = range(sp.sp, m_.n_states);
                    for (int p = p0; p < p1; ++p) {
                        double* row = &grid[p * O];
                        if (sp.kind == 1) {
                            std::copy(v, v + O, row);
                        } else if (sp.o < 0) {
                            std::fill(row, row + O, v[0]);
                        } else {
                            row[sp.o] = v[0];
                        }
                    }
                }
                // A grid that came out constant is a constant reward: keep it exact.
                if (std::all_of(grid.begin(), grid.end(), [&](double g) { return g == grid[0]; })) {
                    m_.R[a * S + s] = grid[0];
                    continue;
                }
                double r = 0.0;
                if (m_.sparse) {
                    const Csr& T = m_.Ts;
                    const Csr& Z = m_.Zs;
                    const std::size_t row = a * S + s;
                    for (auto k = T.ptr[row]; k < T.ptr[row + 1]; ++k) {
                        const std::size_t p = T.idx[k];
                        const std::size_t zr = a * S + p;
                        const double* grow = &grid[p * O];
                        double e = 0.0;
                        for (auto j = Z.ptr[zr]; j < Z.ptr[zr + 1]; ++j)
                            e += Z.val[j] * grow[Z.idx[j]];
                        r += T.val[k] * e;
                    }
                    m_.R[a * S + s] = r;
                    continue;
                }
                const double* trow = &m_.T[(a * S + s) * S];
                for (std::size_t p = 0; p < S; ++p) {
                    if (trow[p] == 0.0) continue;
                    const double* zrow = &m_.Z[(a * S + p) * O];
                    const double* grow = &grid[p * O];
                    double e = 0.0;
                    for (std::size_t o = 0; o < O; ++o) e += zrow[o] * grow[o];
                    r += trow[p] * e;
                }
                m_.R[a * S + s] = r;
            }
        }
        if (cost_)
            for (double& r : m_.R) r = 0.0 - r;  // 0 - r keeps +0.0 for zero rewards

        if (opts_.validate) {
            if (auto issue = check_pomdp(m_, opts_.tol)) {
                int line = eof;
                std::string note;
                const std::size_t row = static_cast<std::size_t>(std::max(issue->a, 0)) * S +
                                        static_cast<std::size_t>(std::max(issue->s, 0));
                if (issue->array == 'T' || issue->array == 'Z') {
                    const int l = (issue->array == 'T' ? t_line_ : z_line_)[row];
                    if (l > 0) {
                        line = l;
                        note = " (row last set at this line)";
                    } else {
                        note = issue->array == 'T' ? " (no T: entry sets this row)"
                                                   : " (no O: entry sets this row)";
                    }
                } else if (issue->array == 'R') {
                    const auto& lst = rlist_[row];
                    if (!lst.empty()) {
                        line = rspecs_[lst.back()].line;
                        note = " (the last R: entry for this action and state)";
                    }
                } else if (issue->array == 'b' && have_start_) {
                    line = start_line_;
                } else if (issue->array == 'd') {
                    line = discount_line_;
                }
                fail(line, issue->message + note);
            }
        }
        return std::move(m_);
    }
};

// ---------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------

void put_number(std::string& out, double v) {
    if (!std::isfinite(v)) throw std::invalid_argument("cannot write a non-finite number to a .pomdp file");
    char buf[64];
    // Shortest representation that reads back to the same double (what %.17g guarantees,
    // without the noise digits).
    auto res = std::to_chars(buf, buf + sizeof buf, v);
    // "1e-05" -> "1.0e-05": a mantissa with a decimal point is a FLOAT for every reader of
    // the format (pomdp-solve's lexer, SARSOP), and reads back to the same double.
    char* e = std::find(buf, res.ptr, 'e');
    if (e != res.ptr && std::find(buf, e, '.') == e) {
        out.append(buf, e);
        out += ".0";
        out.append(e, res.ptr);
        return;
    }
    out.append(buf, res.ptr);
}

void check_names(const std::vector<std::string>& names, int n, const char* what) {
    if (names.empty()) return;
    if (static_cast<int>(names.size()) != n)
        throw std::invalid_argument(std::string(what) + " names: expected " + std::to_string(n) +
                                    ", got " + std::to_string(names.size()));
    std::unordered_map<std::string, int> seen;
    for (int i = 0; i < n; ++i) {
        if (!valid_name(names[i]))
            throw std::invalid_argument(std::string("cannot write ") + what + " name '" + names[i] +
                                        "' (index " + std::to_string(i) +
                                        "): .pomdp names must match [A-Za-z][A-Za-z0-9_-]* and "
                                        "not be a keyword of the format");
        auto [it, fresh] = seen.emplace(names[i], i);
        if (!fresh)
            throw std::invalid_argument(std::string("cannot write duplicate ") + what + " name '" +
                                        names[i] + "' (indices " + std::to_string(it->second) +
                                        " and " + std::to_string(i) + ")");
    }
}

void put_ref(std::string& out, const std::vector<std::string>& names, int i) {
    if (names.empty()) {
        out += std::to_string(i);
    } else {
        out += names[i];
    }
}

void put_decl(std::string& out, const char* kw, const std::vector<std::string>& names, int n) {
    out += kw;
    out += ":";
    if (names.empty()) {
        out += " " + std::to_string(n);
    } else {
        for (const auto& s : names) out += " " + s;
    }
    out += "\n";
}

// Writes one (rows x cols) block of probabilities for T or O: as a dense matrix after
// "X: a" when it is at least a quarter full, else as "X: a : i : j p" lines for the
// non-zero entries (absent entries read back as 0).
void put_block(std::string& out, char X, const std::string& a, const double* p, int rows, int cols,
               const std::vector<std::string>& row_names,
               const std::vector<std::string>& col_names) {
    std::size_t nnz = 0;
    const std::size_t n = static_cast<std::size_t>(rows) * cols;
    for (std::size_t k = 0; k < n; ++k) nnz += (p[k] != 0.0 || std::signbit(p[k])) ? 1 : 0;
    if (4 * nnz >= n) {
        out += X;
        out += ": " + a + "\n";
        for (int i = 0; i < rows; ++i) {
            for (int j = 0; j < cols; ++j) {
                if (j) out += ' ';
                put_number(out, p[static_cast<std::size_t>(i) * cols + j]);
            }
            out += '\n';
        }
        return;
    }
    for (int i = 0; i < rows; ++i) {
        for (int j = 0; j < cols; ++j) {
            const double v = p[static_cast<std::size_t>(i) * cols + j];
            if (v == 0.0 && !std::signbit(v)) continue;
            out += X;
            out += ": " + a + " : ";
            put_ref(out, row_names, i);
            out += " : ";
            put_ref(out, col_names, j);
            out += ' ';
            put_number(out, v);
            out += '\n';
        }
    }
}

// The sparse counterpart of put_block: "X: a : i : j p" for each stored entry of rows
// [first, first + rows).
void put_rows(std::string& out, char X, const std::string& a, const Csr& m, std::size_t first,
              int rows, const std::vector<std::string>& row_names,
              const std::vector<std::string>& col_names) {
    for (int i = 0; i < rows; ++i) {
        const std::size_t r = first + static_cast<std::size_t>(i);
        for (auto k = m.ptr[r]; k < m.ptr[r + 1]; ++k) {
            out += X;
            out += ": " + a + " : ";
            put_ref(out, row_names, i);
            out += " : ";
            put_ref(out, col_names, m.idx[k]);
            out += ' ';
            put_number(out, m.val[k]);
            out += '\n';
        }
    }
}

}  // namespace

Pomdp parse_pomdp(const std::string& text, const std::string& filename, const ParseOptions& opts,
                  ParseInfo* info) {
    if (!(opts.tol >= 0.0) || !std::isfinite(opts.tol))
        throw std::invalid_argument("tol must be a finite number >= 0");
    ParseNeed need;
    try {
        Parser p(text, filename, opts, &need);
        Pomdp m = p.parse();
        if (info) info->cost = p.cost();
        return m;
    } catch (const std::bad_alloc&) {
        // The memory limit is an estimate; the machine (or a ulimit) may have less.  Say
        // so in the library's own terms instead of a bare std::bad_alloc.
        char buf[160];
        if (need.bytes >= 0.0) {
            std::snprintf(buf, sizeof buf,
                          need.sparse ? "the model's sparse rows of T and Z and R need about %.1f MB"
                                      : "the model's dense arrays T, Z and R need about %.1f MB",
                          need.bytes / kMiB);
        } else {
            std::snprintf(buf, sizeof buf, "reading %.1f MB of text",
                          static_cast<double>(text.size()) / kMiB);
        }
        throw MemoryLimitError(filename + ": out of memory while parsing (" + buf +
                               "); use a smaller model, a lower limit (max_memory_mb) or a "
                               "machine with more memory");
    }
}

double parse_sparse_base_bytes(double S, double A, double O) {
    // R, b0 and one S x O reward grid in doubles; per (a, s) row two int line numbers, one
    // std::vector of R statements and the two row lists of T and Z; the final row offsets.
    return 8.0 * (A * S + S + S * O) +
           A * S * (2.0 * sizeof(int) + sizeof(std::vector<std::uint32_t>) +
                    2.0 * sizeof(std::vector<std::pair<int, double>>) + 2.0 * 8.0);
}

double parse_memory_bytes(double S, double A, double O) {
    // 8-byte doubles: T, Z, R, b0 and one S x O reward grid; per (a, s) row two int line
    // numbers and one std::vector of R statements.
    return 8.0 * (A * S * S + A * S * O + A * S + S + S * O) +
           A * S * (2.0 * sizeof(int) + sizeof(std::vector<std::uint32_t>));
}

std::string write_pomdp(const Pomdp& m) {
    if (auto issue = check_pomdp(m, std::numeric_limits<double>::infinity()); issue &&
        (issue->array == 'n' || issue->array == 'd'))
        throw std::invalid_argument("cannot write an inconsistent model: " + issue->message);
    check_names(m.state_names, m.n_states, "state");
    check_names(m.action_names, m.n_actions, "action");
    check_names(m.obs_names, m.n_obs, "observation");
    const int S = m.n_states, A = m.n_actions, O = m.n_obs;

    std::string out;
    out.reserve(m.sparse ? (m.Ts.idx.size() + m.Zs.idx.size()) * 32 + 4096
                         : static_cast<std::size_t>(A) * S * (S + O) * 2 + 4096);
    out += "# Cassandra .pomdp format, written by trim_pomdp.\n";
    out += "discount: ";
    put_number(out, m.discount);
    out += "\nvalues: reward\n";
    put_decl(out, "states", m.state_names, S);
    put_decl(out, "actions", m.action_names, A);
    put_decl(out, "observations", m.obs_names, O);
    out += "start:";
    for (int s = 0; s < S; ++s) {
        out += ' ';
        put_number(out, m.b0[s]);
    }
    out += "\n\n";
    for (int a = 0; a < A; ++a) {
        std::string an;
        put_ref(an, m.action_names, a);
        if (m.sparse) {
            put_rows(out, 'T', an, m.Ts, static_cast<std::size_t>(a) * S, S, m.state_names,
                     m.state_names);
        } else {
            put_block(out, 'T', an, &m.T[static_cast<std::size_t>(a) * S * S], S, S,
                      m.state_names, m.state_names);
        }
    }
    out += '\n';
    for (int a = 0; a < A; ++a) {
        std::string an;
        put_ref(an, m.action_names, a);
        if (m.sparse) {
            put_rows(out, 'O', an, m.Zs, static_cast<std::size_t>(a) * S, S, m.state_names,
                     m.obs_names);
        } else {
            put_block(out, 'O', an, &m.Z[static_cast<std::size_t>(a) * S * O], S, O,
                      m.state_names, m.obs_names);
        }
    }
    out += '\n';
    // R(a, s) is already an expectation: write it as a reward independent of (s', o), which
    // the parser maps back to exactly the same value.
    for (int a = 0; a < A; ++a) {
        std::string an;
        put_ref(an, m.action_names, a);
        const double* r = &m.R[static_cast<std::size_t>(a) * S];
        bool constant = true;
        for (int s = 1; s < S && constant; ++s)
            constant = r[s] == r[0] && std::signbit(r[s]) == std::signbit(r[0]);
        if (constant) {
            if (r[0] == 0.0 && !std::signbit(r[0])) continue;
            out += "R: " + an + " : * : * : * ";
            put_number(out, r[0]);
            out += '\n';
            continue;
        }
        for (int s = 0; s < S; ++s) {
            if (r[s] == 0.0 && !std::signbit(r[s])) continue;
            out += "R: " + an + " : ";
            put_ref(out, m.state_names, s);
            out += " : * : * ";
            put_number(out, r[s]);
            out += '\n';
        }
    }
    return out;
}

}  // namespace trim
